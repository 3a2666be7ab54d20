import { GraphQLError, Kind } from 'graphql';
import { DateTimeResolver, JSONResolver } from 'graphql-scalars';
import { formatPicoUsd, parseDecimal, usdOrNull, usdScale, type Usd } from '../../money.ts';
import { builder } from '../builder.ts';

builder.addScalarType('JSON', JSONResolver);
builder.addScalarType('DateTime', DateTimeResolver);

function decimalFrom(text: string): Usd {
  const amount = parseDecimal(text);
  if (amount === null) {
    throw new GraphQLError(`Decimal expects a plain decimal string with at most ${usdScale} decimals, such as "0.0002109"; got ${JSON.stringify(text)}.`, {
      extensions: { code: 'BAD_USER_INPUT' },
    });
  }
  return formatPicoUsd(amount);
}

builder.scalarType('Decimal', {
  description:
    'An exact amount of US dollars as a decimal string, such as "0.0002109": at most 12 decimals, no exponent, no trailing zeros. ' +
    'A string, so that no client reads it into a float: add amounts up with a decimal library (or as integers of 10^-12 USD), never as JavaScript numbers. ' +
    'As input, a string (or, in a query literal, a number whose text is read as it is written).',
  serialize: (value) => {
    const usd = usdOrNull(value);
    if (usd === null) throw new GraphQLError('Decimal cannot represent null.');
    return usd;
  },
  parseValue: (value) => {
    if (typeof value !== 'string') {
      throw new GraphQLError(`Decimal expects a decimal string such as "0.0002109", got ${typeof value}: numbers may already be inexact.`, {
        extensions: { code: 'BAD_USER_INPUT' },
      });
    }
    return decimalFrom(value);
  },
  parseLiteral: (node) => {
    if (node.kind === Kind.STRING || node.kind === Kind.INT || node.kind === Kind.FLOAT) return decimalFrom(node.value);
    throw new GraphQLError('Decimal expects a decimal string such as "0.0002109".', { extensions: { code: 'BAD_USER_INPUT' } });
  },
});
