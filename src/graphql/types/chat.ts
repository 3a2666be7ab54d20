import { builder } from '../builder.ts';

export const ChatRole = builder.enumType('ChatRole', {
  description: 'Who wrote a chat message.',
  values: {
    SYSTEM: { value: 'system', description: 'Instructions that frame the conversation.' },
    USER: { value: 'user', description: 'The person or program asking.' },
    ASSISTANT: { value: 'assistant', description: 'The model.' },
    DEVELOPER: { value: 'developer', description: 'Instructions from the developer (reasoning models).' },
    TOOL: { value: 'tool', description: 'The result of a tool call.' },
  } as const,
});

export const ChatMessageInput = builder.inputType('ChatMessageInput', {
  description: 'One message of a conversation sent to a model.',
  fields: (t) => ({
    role: t.field({ type: ChatRole, required: true, description: 'Who wrote the message.' }),
    content: t.string({ required: true, description: 'The text of the message.' }),
    name: t.string({ description: 'An optional name that tells participants of the same role apart.' }),
  }),
});
