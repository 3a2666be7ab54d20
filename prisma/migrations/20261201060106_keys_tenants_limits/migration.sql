-- CreateEnum
CREATE TYPE "ApiKeyRole" AS ENUM ('ADMIN', 'MEMBER', 'VIEWER');

-- AlterTable
ALTER TABLE "CacheEntry" ADD COLUMN     "apiKeyId" UUID,
ADD COLUMN     "tenant" TEXT NOT NULL DEFAULT 'default';

-- AlterTable
ALTER TABLE "LlmAttempt" ADD COLUMN     "apiKeyId" UUID,
ADD COLUMN     "tenant" TEXT NOT NULL DEFAULT 'default';

-- AlterTable
ALTER TABLE "LlmCall" ADD COLUMN     "apiKeyId" UUID,
ADD COLUMN     "servedByCallId" UUID,
ADD COLUMN     "tenant" TEXT NOT NULL DEFAULT 'default';

-- CreateTable
CREATE TABLE "ApiKey" (
    "id" UUID NOT NULL,
    "name" TEXT NOT NULL,
    "role" "ApiKeyRole" NOT NULL,
    "tenant" TEXT NOT NULL,
    "prefix" TEXT NOT NULL,
    "hash" TEXT NOT NULL,
    "requestsPerMinute" INTEGER,
    "tokensPerMinute" INTEGER,
    "usdPerDay" DOUBLE PRECISION,
    "usdPerMonth" DOUBLE PRECISION,
    "createdAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "createdBy" TEXT NOT NULL,
    "lastUsedAt" TIMESTAMPTZ(3),
    "revokedAt" TIMESTAMPTZ(3),
    "expiresAt" TIMESTAMPTZ(3),

    CONSTRAINT "ApiKey_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "ApiKeyUsage" (
    "apiKeyId" UUID NOT NULL,
    "requestsTat" DOUBLE PRECISION NOT NULL DEFAULT 0,
    "tokensTat" DOUBLE PRECISION NOT NULL DEFAULT 0,
    "day" TEXT NOT NULL DEFAULT '',
    "dayUsd" DOUBLE PRECISION NOT NULL DEFAULT 0,
    "month" TEXT NOT NULL DEFAULT '',
    "monthUsd" DOUBLE PRECISION NOT NULL DEFAULT 0,

    CONSTRAINT "ApiKeyUsage_pkey" PRIMARY KEY ("apiKeyId")
);

-- CreateTable
CREATE TABLE "ApiKeyChange" (
    "id" UUID NOT NULL,
    "apiKeyId" UUID NOT NULL,
    "action" TEXT NOT NULL,
    "changes" JSONB,
    "changedBy" TEXT NOT NULL,
    "changedAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "ApiKeyChange_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "CacheInvalidation" (
    "id" UUID NOT NULL,
    "tenant" TEXT,
    "filter" JSONB NOT NULL,
    "count" INTEGER NOT NULL,
    "invalidatedBy" TEXT NOT NULL,
    "at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "CacheInvalidation_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "ApiKey_hash_key" ON "ApiKey"("hash");

-- CreateIndex
CREATE INDEX "ApiKey_tenant_createdAt_idx" ON "ApiKey"("tenant", "createdAt");

-- CreateIndex
CREATE INDEX "ApiKeyChange_apiKeyId_changedAt_idx" ON "ApiKeyChange"("apiKeyId", "changedAt");

-- CreateIndex
CREATE INDEX "CacheInvalidation_at_idx" ON "CacheInvalidation"("at");

-- CreateIndex
CREATE INDEX "CacheEntry_tenant_createdAt_idx" ON "CacheEntry"("tenant", "createdAt");

-- CreateIndex
CREATE INDEX "LlmCall_tenant_createdAt_id_idx" ON "LlmCall"("tenant", "createdAt", "id");

-- CreateIndex
CREATE INDEX "LlmCall_apiKeyId_createdAt_idx" ON "LlmCall"("apiKeyId", "createdAt");

-- CreateIndex
CREATE INDEX "LlmCall_servedByCallId_idx" ON "LlmCall"("servedByCallId");

-- AddForeignKey
ALTER TABLE "ApiKeyUsage" ADD CONSTRAINT "ApiKeyUsage_apiKeyId_fkey" FOREIGN KEY ("apiKeyId") REFERENCES "ApiKey"("id") ON DELETE CASCADE ON UPDATE CASCADE;
