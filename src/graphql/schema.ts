import { builder } from './builder.ts';
import './types/scalars.ts';
import './types/chat.ts';
import './types/tokens.ts';
import './types/settings.ts';

builder.queryType({ description: 'Read operations.' });

export const schema = builder.toSchema({ sortSchema: false });
