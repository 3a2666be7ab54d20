import type { ObjectRef } from '@pothos/core';
import { defaultPageSize, type Page } from '../../analytics/calls.ts';
import { builder } from '../builder.ts';

interface PageInfoShape {
  hasNextPage: boolean;
  hasPreviousPage: boolean;
  startCursor: string | null;
  endCursor: string | null;
}

const PageInfo = builder.objectRef<PageInfoShape>('PageInfo').implement({
  description: 'Where a page of a connection starts and ends. Pages are keyset-based: rows added later never shift the pages after a cursor.',
  fields: (t) => ({
    hasNextPage: t.exposeBoolean('hasNextPage', { description: 'True when another page follows.' }),
    hasPreviousPage: t.exposeBoolean('hasPreviousPage', { description: 'True when this page was asked for with `after`.' }),
    startCursor: t.exposeString('startCursor', { nullable: true, description: 'The cursor of the first edge.' }),
    endCursor: t.exposeString('endCursor', { nullable: true, description: 'Pass as `after` to get the next page.' }),
  }),
});

/** A page together with the `after` it was asked with. */
export interface ConnectionShape<T> {
  page: Page<T>;
  after: string | null | undefined;
}

/**
 * The cost of a connection field: its nodes' selection counts once per row of the page (`first`,
 * else the default page size), so pages nested in pages multiply down the tree.
 */
export const connectionComplexity = (args: { first?: number | null }) => ({ field: 2, multiplier: Math.max(0, args.first ?? defaultPageSize) });

/** The Relay connection and edge types of a node type. */
export function connectionOf<T>(name: string, node: ObjectRef<any, T>, description: string) {
  const Edge = builder.objectRef<{ node: T; cursor: string }>(`${name}Edge`).implement({
    description: `One ${name} of a page, with its cursor.`,
    fields: (t) => ({
      node: t.field({ type: node, resolve: (edge) => edge.node as never, description: `The ${name}.` }),
      cursor: t.exposeString('cursor', { description: 'Pass as `after` to get the rows that follow this one.' }),
    }),
  });
  return builder.objectRef<ConnectionShape<T>>(`${name}Connection`).implement({
    description,
    fields: (t) => ({
      // The connection field already counts each row of the page.
      edges: t.field({ type: [Edge], complexity: { field: 1, multiplier: 1 }, resolve: (connection) => connection.page.nodes, description: 'The rows of this page.' }),
      pageInfo: t.field({
        type: PageInfo,
        description: 'Where this page starts and ends.',
        resolve: ({ page, after }) => ({
          hasNextPage: page.hasNextPage,
          hasPreviousPage: Boolean(after),
          startCursor: page.nodes[0]?.cursor ?? null,
          endCursor: page.nodes.at(-1)?.cursor ?? null,
        }),
      }),
      // A count(*) over the whole filter.
      totalCount: t.int({ complexity: 10, description: 'How many rows match the filter, across all pages.', resolve: (connection) => connection.page.totalCount() }),
    }),
  });
}
