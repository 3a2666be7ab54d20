import type { Config, Setting } from '../config/config.ts';

/** What resolvers may use. The Prisma client stays out: resolvers go through services. */
export interface GraphQLContext {
  config: Config;
  settings: readonly Setting[];
}
