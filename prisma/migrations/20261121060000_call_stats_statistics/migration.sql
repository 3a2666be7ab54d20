-- Written by hand: schema.prisma cannot express extended statistics (Prisma leaves them alone when it
-- diffs). They tell the planner how few (model, day) and (model, hour) groups the history holds, so
-- callStats hashes its groups instead of sorting every row. The expressions are those of
-- src/analytics/call-stats.ts and must stay identical to them.
CREATE STATISTICS "LlmCall_model_day_stats" ON "model", (date_trunc('day', "createdAt" AT TIME ZONE 'UTC')) FROM "LlmCall";
CREATE STATISTICS "LlmCall_model_hour_stats" ON "model", (date_trunc('hour', "createdAt" AT TIME ZONE 'UTC')) FROM "LlmCall";
