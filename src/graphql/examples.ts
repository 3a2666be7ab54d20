/** What GraphiQL opens with: operations a newcomer can run at once (the play button picks one). */
export const exampleOperations = `# Welcome to Callboard. Pick an operation with the play button; the Docs pane explains every field.

query CountTokens {
  tokenCount(
    model: "gpt-4o"
    messages: [
      { role: SYSTEM, content: "You are a helpful assistant." }
      { role: USER, content: "How many tokens is this?" }
    ]
  ) {
    tokens
    encoding
  }
}

mutation SendMessage {
  sendMessage(input: { messages: [{ role: USER, content: "Say hello in French." }], cache: USE, tags: ["graphiql"] }) {
    message { content }
    cacheStatus
    attempts
    latencyMs
    usage { totalTokens }
    call { id costUsd costSavedUsd }
  }
}

query Embedding {
  embedding(text: "Callboard", cache: USE) {
    dimensions
    cacheStatus
  }
}

query RecentCalls {
  calls(first: 10) {
    totalCount
    edges {
      node { id createdAt model status cacheStatus errorCode latencyMs costUsd costSavedUsd tags }
    }
    pageInfo { hasNextPage endCursor }
  }
}

query CostByModelAndDay {
  callStats(groupBy: [MODEL, DAY]) {
    model
    day
    calls
    errors
    hitRate
    costUsd
    costSavedUsd
    latencyP50Ms
    latencyP95Ms
  }
}

# Runs until stopped: each call as it finishes, on any instance (send a message in another tab).
subscription WatchCalls {
  callEvents {
    missed
    call { id createdAt model status cacheStatus errorCode latencyMs }
  }
}

query Cache {
  cacheEntries(first: 10, orderBy: { field: HIT_COUNT }) {
    totalCount
    edges { node { key model hitCount lastHitAt costUsd } }
  }
}

query ProvidersAndSettings {
  providers { apiType active configured missing }
  overrides { key value updatedBy updatedAt }
  settings { section key value source origin }
}
`;
