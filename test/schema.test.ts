import { readFileSync } from 'node:fs';
import { printSchema } from 'graphql';
import { expect, it } from 'vitest';
import { schema } from '../src/graphql/schema.ts';
import { adminMutationNames } from '../src/graphql/types/admin.ts';

it('schema.graphql is the printed Pothos schema (run `npm run schema:print` after changing the API)', () => {
  const committed = readFileSync(new URL('../schema.graphql', import.meta.url), 'utf8');
  expect(committed).toBe(`${printSchema(schema)}\n`);
});

it('every mutation but the calls to models is in the admin group, so one rule can guard them', () => {
  const callMutations = ['sendMessage', 'sendTemplatedMessage'];
  const mutations = Object.keys(schema.getMutationType()!.getFields());
  expect([...adminMutationNames].sort()).toEqual(mutations.filter((name) => !callMutations.includes(name)).sort());
  expect([...adminMutationNames].sort()).toEqual(['forceApiCache', 'forceApiType', 'forceDefaultValue', 'invalidateCache', 'resetOverrides']);
});
