-- CreateEnum
CREATE TYPE "CallKind" AS ENUM ('CHAT', 'EMBEDDING');

-- CreateEnum
CREATE TYPE "CallStatus" AS ENUM ('SUCCESS', 'ERROR');

-- CreateEnum
CREATE TYPE "CacheStatus" AS ENUM ('HIT', 'MISS', 'REFRESH', 'BYPASS');

-- CreateTable
CREATE TABLE "CacheEntry" (
    "key" TEXT NOT NULL,
    "keyVersion" INTEGER NOT NULL,
    "kind" "CallKind" NOT NULL,
    "apiType" TEXT NOT NULL,
    "model" TEXT NOT NULL,
    "request" JSONB NOT NULL,
    "response" JSONB NOT NULL,
    "promptTokens" INTEGER,
    "completionTokens" INTEGER,
    "totalTokens" INTEGER,
    "costUsd" DOUBLE PRECISION,
    "hitCount" INTEGER NOT NULL DEFAULT 0,
    "createdAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "lastHitAt" TIMESTAMPTZ(3),
    "expiresAt" TIMESTAMPTZ(3),
    "createdByCallId" UUID,

    CONSTRAINT "CacheEntry_pkey" PRIMARY KEY ("key")
);

-- CreateTable
CREATE TABLE "LlmCall" (
    "id" UUID NOT NULL,
    "createdAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "kind" "CallKind" NOT NULL,
    "apiType" TEXT NOT NULL,
    "model" TEXT NOT NULL,
    "status" "CallStatus" NOT NULL,
    "cacheStatus" "CacheStatus" NOT NULL,
    "cacheKey" TEXT,
    "errorCode" TEXT,
    "errorMessage" TEXT,
    "attemptCount" INTEGER NOT NULL DEFAULT 0,
    "latencyMs" DOUBLE PRECISION NOT NULL,
    "promptTokens" INTEGER,
    "completionTokens" INTEGER,
    "totalTokens" INTEGER,
    "estimatedPromptTokens" INTEGER,
    "costUsd" DOUBLE PRECISION,
    "templateName" TEXT,
    "templateHash" TEXT,
    "tags" TEXT[] DEFAULT ARRAY[]::TEXT[],

    CONSTRAINT "LlmCall_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "LlmCallBody" (
    "callId" UUID NOT NULL,
    "metadata" JSONB,
    "requestBody" JSONB,
    "responseBody" JSONB,

    CONSTRAINT "LlmCallBody_pkey" PRIMARY KEY ("callId")
);

-- CreateTable
CREATE TABLE "LlmAttempt" (
    "id" UUID NOT NULL,
    "callId" UUID NOT NULL,
    "number" INTEGER NOT NULL,
    "startedAt" TIMESTAMPTZ(3) NOT NULL,
    "latencyMs" DOUBLE PRECISION NOT NULL,
    "httpStatus" INTEGER,
    "errorCode" TEXT,
    "errorMessage" TEXT,
    "waitMs" INTEGER,
    "requestId" TEXT,

    CONSTRAINT "LlmAttempt_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "RuntimeOverride" (
    "key" TEXT NOT NULL,
    "value" JSONB NOT NULL,
    "updatedAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedBy" TEXT NOT NULL,

    CONSTRAINT "RuntimeOverride_pkey" PRIMARY KEY ("key")
);

-- CreateTable
CREATE TABLE "OverrideChange" (
    "id" UUID NOT NULL,
    "key" TEXT NOT NULL,
    "oldValue" JSONB,
    "newValue" JSONB,
    "changedBy" TEXT NOT NULL,
    "changedAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "OverrideChange_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "CacheEntry_createdAt_idx" ON "CacheEntry"("createdAt");

-- CreateIndex
CREATE INDEX "CacheEntry_model_createdAt_idx" ON "CacheEntry"("model", "createdAt");

-- CreateIndex
CREATE INDEX "CacheEntry_lastHitAt_idx" ON "CacheEntry"("lastHitAt");

-- CreateIndex
CREATE INDEX "CacheEntry_expiresAt_idx" ON "CacheEntry"("expiresAt");

-- CreateIndex
CREATE INDEX "LlmCall_createdAt_id_idx" ON "LlmCall"("createdAt", "id");

-- CreateIndex
CREATE INDEX "LlmCall_model_createdAt_idx" ON "LlmCall"("model", "createdAt");

-- CreateIndex
CREATE INDEX "LlmCall_apiType_createdAt_idx" ON "LlmCall"("apiType", "createdAt");

-- CreateIndex
CREATE INDEX "LlmCall_status_createdAt_idx" ON "LlmCall"("status", "createdAt");

-- CreateIndex
CREATE INDEX "LlmCall_cacheStatus_createdAt_idx" ON "LlmCall"("cacheStatus", "createdAt");

-- CreateIndex
CREATE INDEX "LlmCall_templateName_createdAt_idx" ON "LlmCall"("templateName", "createdAt");

-- CreateIndex
CREATE INDEX "LlmCall_errorCode_idx" ON "LlmCall"("errorCode");

-- CreateIndex
CREATE INDEX "LlmCall_cacheKey_idx" ON "LlmCall"("cacheKey");

-- CreateIndex
CREATE INDEX "LlmCall_tags_idx" ON "LlmCall" USING GIN ("tags");

-- CreateIndex
CREATE UNIQUE INDEX "LlmAttempt_callId_number_key" ON "LlmAttempt"("callId", "number");

-- CreateIndex
CREATE INDEX "OverrideChange_key_changedAt_idx" ON "OverrideChange"("key", "changedAt");

-- AddForeignKey
ALTER TABLE "LlmCallBody" ADD CONSTRAINT "LlmCallBody_callId_fkey" FOREIGN KEY ("callId") REFERENCES "LlmCall"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "LlmAttempt" ADD CONSTRAINT "LlmAttempt_callId_fkey" FOREIGN KEY ("callId") REFERENCES "LlmCall"("id") ON DELETE CASCADE ON UPDATE CASCADE;
