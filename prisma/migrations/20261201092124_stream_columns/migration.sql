-- AlterTable
ALTER TABLE "LlmCall" ADD COLUMN     "streamed" BOOLEAN NOT NULL DEFAULT false,
ADD COLUMN     "timeToFirstTokenMs" DOUBLE PRECISION;
