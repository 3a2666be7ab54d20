import { checkMessages, checkTexts } from '../../llm/input-limits.ts';
import { countTokensAsync, type TokenCountResult } from '../../llm/tokens.ts';
import { access, builder } from '../builder.ts';
import { ChatMessageInput, toMessage } from './chat.ts';

const TokenCount = builder.objectRef<TokenCountResult>('TokenCount').implement({
  description: "A token count made with the model's own tokenizer (OpenAI's tiktoken encodings), as the OpenAI API would count it.",
  fields: (t) => ({
    tokens: t.exposeInt('tokens', {
      description: "The number of tokens. For messages it follows the OpenAI cookbook's accounting: per-message overhead, names, and the 3 tokens that prime the reply.",
    }),
    model: t.exposeString('model', { description: 'The model the count is for.' }),
    encoding: t.exposeString('encoding', {
      description: 'The tokenizer encoding used: o200k_base (gpt-4o, gpt-4.1, gpt-5, o-series) or cl100k_base (gpt-4, gpt-3.5-turbo, text-embedding-3). Unknown models fall back to o200k_base.',
    }),
    fallback: t.exposeBoolean('fallback', { description: 'True when the model is unknown and the fallback encoding was used.' }),
  }),
});

builder.queryField('tokenCount', (t) =>
  t.field({
    ...access.member,
    type: TokenCount,
    description: 'Counts the tokens of a text or of a list of chat messages (exactly one of the two).',
    args: {
      model: t.arg.string({ description: 'The model whose tokenizer to use. Default: the MODEL setting.' }),
      text: t.arg.string({ description: 'A plain text to count.' }),
      messages: t.arg({ type: [ChatMessageInput], description: 'Chat messages to count as a prompt.' }),
    },
    resolve: (_root, args, context) => {
      // Counting takes time in proportion to the text: the bound of a call holds here too.
      const limits = context.services.loaded.config.limits;
      if (args.text != null) checkTexts([args.text], limits, 'text');
      // Text parts are counted as the provider counts them; images are not counted.
      const messages = args.messages?.map(toMessage);
      if (messages != null) checkMessages(messages, limits);
      // The async count gives the event loop a turn between slices: a megabyte of text blocks nobody.
      return countTokensAsync({ model: args.model ?? context.services.overrides.settings().model, text: args.text, messages });
    },
  }),
);
