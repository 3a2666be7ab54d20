// Writes schema.graphql from the Pothos schema: `npm run schema:print`. A test fails when they differ.
import { writeFileSync } from 'node:fs';
import { printSchema } from 'graphql';
import { schema } from '../src/graphql/schema.ts';

writeFileSync(new URL('../schema.graphql', import.meta.url), `${printSchema(schema)}\n`);
console.log('Wrote schema.graphql');
