-- AlterTable
ALTER TABLE "ApiKey" ALTER COLUMN "usdPerDay" SET DATA TYPE DECIMAL(24,12),
ALTER COLUMN "usdPerMonth" SET DATA TYPE DECIMAL(24,12);

-- AlterTable
ALTER TABLE "ApiKeyUsage" ALTER COLUMN "dayUsd" SET DATA TYPE DECIMAL(24,12),
ALTER COLUMN "monthUsd" SET DATA TYPE DECIMAL(24,12);

-- AlterTable
ALTER TABLE "CacheEntry" ALTER COLUMN "costUsd" SET DATA TYPE DECIMAL(24,12);

-- AlterTable
ALTER TABLE "LlmCall" ADD COLUMN     "costSavedUsd" DECIMAL(24,12),
ALTER COLUMN "costUsd" SET DATA TYPE DECIMAL(24,12);

-- AlterTable
ALTER TABLE "LlmCallRollup" ALTER COLUMN "costUsd" SET DATA TYPE DECIMAL(24,12),
ALTER COLUMN "costSavedUsd" SET DATA TYPE DECIMAL(24,12);

-- AlterTable
ALTER TABLE "LlmCallRollupDay" ALTER COLUMN "costUsd" SET DATA TYPE DECIMAL(24,12),
ALTER COLUMN "costSavedUsd" SET DATA TYPE DECIMAL(24,12);

-- Written by hand from here on. The columns above were float8: numeric(24,12) rounds each value to
-- the picodollar, which drops float noise such as 0.00021089999999999987 (now 0.000210900000).
-- A cache hit's row used to hold in "costUsd" what the hit saved: it spent nothing, so that value
-- moves to "costSavedUsd" and "costUsd" becomes 0, as new rows are written (src/llm/pipeline/record.ts).
UPDATE "LlmCall" SET "costSavedUsd" = "costUsd", "costUsd" = 0 WHERE "cacheStatus" = 'HIT';

-- The rollup's sums were added up in float8: it starts over from the exact calls (as after a
-- TRUNCATE of "LlmCall"), and callStats reads the calls until the job has rolled them up again.
DELETE FROM "LlmCallRollup";
DELETE FROM "LlmCallRollupDay";
DELETE FROM "LlmCallRollupPending";
DELETE FROM "LlmCallRollupState";
