-- CreateTable
CREATE TABLE "LlmCallRollup" (
    "id" BIGSERIAL NOT NULL,
    "hour" TIMESTAMPTZ(3) NOT NULL,
    "tenant" TEXT NOT NULL,
    "apiKeyId" UUID,
    "kind" "CallKind" NOT NULL,
    "apiType" TEXT NOT NULL,
    "model" TEXT NOT NULL,
    "status" "CallStatus" NOT NULL,
    "cacheStatus" "CacheStatus" NOT NULL,
    "templateName" TEXT,
    "calls" INTEGER NOT NULL,
    "errors" INTEGER NOT NULL,
    "cacheHits" INTEGER NOT NULL,
    "cacheMisses" INTEGER NOT NULL,
    "promptTokens" BIGINT NOT NULL,
    "completionTokens" BIGINT NOT NULL,
    "costUsd" DOUBLE PRECISION,
    "tokensSaved" BIGINT NOT NULL,
    "costSavedUsd" DOUBLE PRECISION,
    "latencyMaxMs" DOUBLE PRECISION NOT NULL,
    "latencyBuckets" INTEGER[],
    "latencyCounts" INTEGER[],

    CONSTRAINT "LlmCallRollup_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "LlmCallRollupDay" (
    "id" BIGSERIAL NOT NULL,
    "day" TIMESTAMPTZ(3) NOT NULL,
    "tenant" TEXT NOT NULL,
    "apiKeyId" UUID,
    "kind" "CallKind" NOT NULL,
    "model" TEXT NOT NULL,
    "calls" INTEGER NOT NULL,
    "errors" INTEGER NOT NULL,
    "cacheHits" INTEGER NOT NULL,
    "cacheMisses" INTEGER NOT NULL,
    "promptTokens" BIGINT NOT NULL,
    "completionTokens" BIGINT NOT NULL,
    "costUsd" DOUBLE PRECISION,
    "tokensSaved" BIGINT NOT NULL,
    "costSavedUsd" DOUBLE PRECISION,
    "latencyMaxMs" DOUBLE PRECISION NOT NULL,
    "latencyBuckets" INTEGER[],
    "latencyCounts" INTEGER[],

    CONSTRAINT "LlmCallRollupDay_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "LlmCallRollupPending" (
    "hour" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "LlmCallRollupPending_pkey" PRIMARY KEY ("hour")
);

-- CreateTable
CREATE TABLE "LlmCallRollupState" (
    "id" INTEGER NOT NULL DEFAULT 1,
    "rolledUntil" TIMESTAMPTZ(3),

    CONSTRAINT "LlmCallRollupState_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "LlmCallRollup_hour_idx" ON "LlmCallRollup"("hour");

-- CreateIndex
CREATE INDEX "LlmCallRollup_tenant_hour_idx" ON "LlmCallRollup"("tenant", "hour");

-- CreateIndex
CREATE INDEX "LlmCallRollupDay_day_idx" ON "LlmCallRollupDay"("day");

-- CreateIndex
CREATE INDEX "LlmCallRollupDay_tenant_day_idx" ON "LlmCallRollupDay"("tenant", "day");

-- Written by hand from here on: schema.prisma cannot express triggers (Prisma leaves them alone when it
-- diffs). Every statement that inserts, updates or deletes calls marks their UTC hours pending, so that
-- the rollup job (src/analytics/call-rollup.ts) rolls them up again and callStats reads them from the
-- calls meanwhile: rows written late (write-behind batches, the spool replayed after an outage) are
-- counted. One statement marks a batch, not one call. The shared advisory lock (the key is
-- rollupWritersLock in call-rollup.ts) lets writers run together; the job takes it exclusively, so a
-- batch either commits before the job reads the calls or marks its hours after the job has committed.
CREATE FUNCTION "LlmCall_rollup_mark"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(212540172);
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO "LlmCallRollupPending" ("hour")
    SELECT DISTINCT date_trunc('hour', r."createdAt" AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' FROM new_rows r
    ON CONFLICT DO NOTHING;
  END IF;
  IF TG_OP IN ('DELETE', 'UPDATE') THEN
    INSERT INTO "LlmCallRollupPending" ("hour")
    SELECT DISTINCT date_trunc('hour', r."createdAt" AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' FROM old_rows r
    ON CONFLICT DO NOTHING;
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER "LlmCall_rollup_insert" AFTER INSERT ON "LlmCall" REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "LlmCall_rollup_mark"();
CREATE TRIGGER "LlmCall_rollup_update" AFTER UPDATE ON "LlmCall" REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "LlmCall_rollup_mark"();
CREATE TRIGGER "LlmCall_rollup_delete" AFTER DELETE ON "LlmCall" REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION "LlmCall_rollup_mark"();

-- TRUNCATE leaves no rows to mark: the rollup starts over.
CREATE FUNCTION "LlmCall_rollup_reset"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(212540172);
  DELETE FROM "LlmCallRollup";
  DELETE FROM "LlmCallRollupDay";
  DELETE FROM "LlmCallRollupPending";
  DELETE FROM "LlmCallRollupState";
  RETURN NULL;
END $$;

CREATE TRIGGER "LlmCall_rollup_truncate" AFTER TRUNCATE ON "LlmCall" FOR EACH STATEMENT EXECUTE FUNCTION "LlmCall_rollup_reset"();
