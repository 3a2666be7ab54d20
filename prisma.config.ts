import { defineConfig } from 'prisma/config';

// The Prisma CLI reads this file; Callboard itself connects through driver adapters (src/db/).
export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  datasource: { url: process.env.DATABASE_URL ?? 'postgresql://localhost:5432/callboard' },
});
