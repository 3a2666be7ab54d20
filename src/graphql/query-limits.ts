import { maxAliasesRule } from '@escape.tech/graphql-armor-max-aliases';
import { maxDepthRule } from '@escape.tech/graphql-armor-max-depth';
import { maxDirectivesRule } from '@escape.tech/graphql-armor-max-directives';
import { createComplexityRule } from '@pothos/plugin-complexity';
import {
  getOperationAST,
  TypeInfo,
  visit,
  visitWithTypeInfo,
  type ArgumentNode,
  GraphQLError,
  Kind,
  TokenKind,
  validate,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
  type FragmentDefinitionNode,
  type GraphQLSchema,
  type ParseOptions,
  type SelectionSetNode,
  type Source,
  type ValidationContext,
} from 'graphql';
// The parser class is not exported from graphql's index; Armor's own token limit imports it the same way.
import { Parser } from 'graphql/language/parser.js';
import type { Plugin } from 'graphql-yoga';
import { LRUCache } from 'lru-cache';
import type { Config } from '../config/config.ts';
import { isCallboardError, QueryLimitError, type QueryLimitKey } from '../errors.ts';
import { toGraphQLError } from './errors.ts';
import { isPaidField } from './paid-fields.ts';

export type QueryLimits = Config['limits'];

/**
 * Whatever MAX_QUERY_DEPTH says, the parser refuses nesting past this: far above any query a
 * dashboard sends (introspection nests about 10 levels), far below the ~2,000 levels at which
 * graphql-js's recursive parser overflows the stack (measured: 1,000 levels parse, 2,500 do not).
 */
const parserNestingFloor = 64;

/**
 * graphql-js's parser, counting tokens and nesting as it goes: a query past MAX_QUERY_TOKENS is
 * refused after reading that many tokens (not the whole text), and a deeply nested one before the
 * parser's recursion can exhaust the stack.
 */
class BoundedParser extends Parser {
  private tokens = 0;
  private nesting = 0;
  private readonly maxTokens: number;
  private readonly maxNesting: number;

  constructor(source: string | Source, options: ParseOptions & { maxTokens: number; maxNesting: number }) {
    // graphql-js's own maxTokens would throw a plain syntax error: this class counts instead.
    super(source, { ...options, maxTokens: undefined });
    this.maxTokens = options.maxTokens;
    this.maxNesting = options.maxNesting;
  }

  override advanceLexer(): void {
    super.advanceLexer();
    if (this._lexer.token.kind !== TokenKind.EOF && ++this.tokens > this.maxTokens) {
      throw new QueryLimitError('MAX_QUERY_TOKENS', `The query has more than ${this.maxTokens} tokens ([Limits] MAX_QUERY_TOKENS).`, { max: this.maxTokens });
    }
  }

  private nested<T>(parse: () => T): T {
    if (++this.nesting > this.maxNesting) {
      throw new QueryLimitError('MAX_QUERY_DEPTH', `The query nests more than ${this.maxNesting} levels deep; it is not read further ([Limits] MAX_QUERY_DEPTH).`, {
        max: this.maxNesting,
      });
    }
    try {
      return parse();
    } finally {
      this.nesting--;
    }
  }

  override parseSelectionSet() {
    return this.nested(() => super.parseSelectionSet());
  }

  override parseValueLiteral(isConst: true): ReturnType<Parser['parseConstValueLiteral']>;
  override parseValueLiteral(isConst: boolean): ReturnType<Parser['parseValueLiteral']>;
  override parseValueLiteral(isConst: boolean) {
    return this.nested(() => super.parseValueLiteral(isConst));
  }

  override parseTypeReference() {
    return this.nested(() => super.parseTypeReference());
  }
}

function isStackOverflow(error: unknown): boolean {
  return error instanceof RangeError && /call stack/i.test(error.message);
}

function tooDeep(limits: QueryLimits, cause: unknown): QueryLimitError {
  const error = new QueryLimitError('MAX_QUERY_DEPTH', `The query is nested too deeply to be read ([Limits] MAX_QUERY_DEPTH is ${limits.maxQueryDepth}).`, {
    max: limits.maxQueryDepth,
  });
  return Object.assign(error, { cause });
}

/** Parses a query within the token and nesting limits; a stack overflow becomes QUERY_TOO_DEEP too. */
export function parseWithinLimits(source: string | Source, limits: QueryLimits, options: ParseOptions = {}): DocumentNode {
  try {
    return new BoundedParser(source, { ...options, maxTokens: limits.maxQueryTokens, maxNesting: Math.max(parserNestingFloor, limits.maxQueryDepth) }).parseDocument();
  } catch (error) {
    if (isStackOverflow(error)) throw tooDeep(limits, error);
    throw error;
  }
}


/** GraphQL Armor's document rules, which say the count they found only in their message. */
function armorRules(limits: QueryLimits) {
  const reject = (limit: QueryLimitKey, max: number, what: string) => ({
    n: max,
    propagateOnRejection: false,
    onReject: [
      (context: ValidationContext | null, error: GraphQLError) => {
        const found = /found (\d+)/.exec(error.message);
        const actual = found ? Number(found[1]) : undefined;
        context?.reportError(
          toGraphQLError(new QueryLimitError(limit, `The query has ${actual ?? 'more than ' + max} ${what}; at most ${max} are allowed ([Limits] ${limit}).`, { max, actual })),
        );
      },
    ],
  });
  return [
    maxDepthRule({ ...reject('MAX_QUERY_DEPTH', limits.maxQueryDepth, 'levels'), ignoreIntrospection: true, flattenFragments: true }),
    maxAliasesRule(reject('MAX_ALIASES', limits.maxAliases, 'aliases')),
    maxDirectivesRule(reject('MAX_DIRECTIVES', limits.maxDirectives, 'directives')),
  ];
}

/**
 * The paid fields an operation selects at its root, each response key once (an alias is one more
 * upstream call; the same key twice is merged by GraphQL and runs once). `@skip`/`@include` are not
 * read: a paid field counts even when a variable would skip it.
 */
export function countPaidFields(schema: GraphQLSchema, document: DocumentNode, operationName?: string | null): number {
  const operation = getOperationAST(document, operationName);
  const root = operation ? schema.getRootType(operation.operation) : undefined;
  if (!operation || !root) return 0;
  const fields = root.getFields();
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const definition of document.definitions) if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments.set(definition.name.value, definition);
  const keys = new Set<string>();
  const visited = new Set<string>();
  const visit = (selectionSet: SelectionSetNode) => {
    for (const selection of selectionSet.selections) {
      if (selection.kind === Kind.FIELD) {
        const field = fields[selection.name.value];
        if (field && isPaidField(field)) keys.add(selection.alias?.value ?? selection.name.value);
      } else if (selection.kind === Kind.INLINE_FRAGMENT) {
        visit(selection.selectionSet);
      } else if (!visited.has(selection.name.value)) {
        visited.add(selection.name.value);
        const fragment = fragments.get(selection.name.value);
        if (fragment) visit(fragment.selectionSet);
      }
    }
  };
  visit(operation.selectionSet);
  return keys.size;
}

/**
 * The cost of the operation to run, by the fields' `complexity` (Pothos' complexity plugin: each
 * field 1, a list times 10, a connection times its `first`), or null when the variables do not fit
 * the operation (execution then reports that as usual).
 */
export function operationCost(schema: GraphQLSchema, document: DocumentNode, variableValues: Record<string, unknown> | undefined, operationName: string | null | undefined, context: unknown): number | null {
  let cost: number | null = null;
  const rule = createComplexityRule({
    variableValues: variableValues ?? {},
    operationName: operationName ?? undefined,
    context: context as object,
    validate: (result) => {
      cost = result.complexity;
    },
  });
  validate(schema, document, [rule]);
  return cost;
}

/** What one operation of a parsed document costs: its paid fields, and its cost by the values of the variables the cost depends on. */
interface OperationCosts {
  paid: number;
  /** The variables whose values can change the cost. */
  reads: string[];
  costs: Map<string, number | null>;
}

/** Costs kept per operation: a bound for documents whose cost depends on many variable values. */
const costsPerOperation = 64;

/**
 * The variables the cost depends on: those in the arguments of fields whose complexity is a
 * function of their arguments (a connection's `first`, an embedding's texts) and in `@skip` and
 * `@include`. Read from the whole document (every fragment), so possibly a few more than needed.
 */
function costVariables(schema: GraphQLSchema, document: DocumentNode): string[] {
  const typeInfo = new TypeInfo(schema);
  const names = new Set<string>();
  const collect = (nodes: readonly ArgumentNode[] | undefined) => {
    for (const argument of nodes ?? []) visit(argument, { Variable: (variable) => void names.add(variable.name.value) });
  };
  visit(
    document,
    visitWithTypeInfo(typeInfo, {
      Field: (node) => {
        if (typeof typeInfo.getFieldDef()?.extensions?.complexity === 'function') collect(node.arguments);
      },
      Directive: (node) => {
        if (node.name.value === 'skip' || node.name.value === 'include') collect(node.arguments);
      },
    }),
  );
  return [...names].sort();
}

/**
 * `operationCost` and `countPaidFields`, computed once per parsed document and operation (Yoga's
 * parse cache hands back the same DocumentNode for the same text) and, for the cost, per value of
 * the variables it depends on: a chat call's cost is computed once, not at each request (which also
 * coerced its whole input once more).
 */
function createCostCache() {
  const documents = new WeakMap<DocumentNode, Map<string, OperationCosts>>();
  const entry = (schema: GraphQLSchema, document: DocumentNode, operationName: string | null | undefined): OperationCosts => {
    let operations = documents.get(document);
    if (!operations) documents.set(document, (operations = new Map()));
    const name = operationName ?? '';
    let costs = operations.get(name);
    if (!costs) operations.set(name, (costs = { paid: countPaidFields(schema, document, operationName), reads: costVariables(schema, document), costs: new Map() }));
    return costs;
  };
  return {
    paidFields: (schema: GraphQLSchema, document: DocumentNode, operationName: string | null | undefined) => entry(schema, document, operationName).paid,
    cost(schema: GraphQLSchema, document: DocumentNode, variableValues: Record<string, unknown> | undefined, operationName: string | null | undefined, context: unknown): number | null {
      const { reads, costs } = entry(schema, document, operationName);
      const key = reads.length === 0 ? '' : JSON.stringify(reads.map((name) => variableValues?.[name] ?? null));
      const known = costs.get(key);
      if (known !== undefined) return known;
      const cost = operationCost(schema, document, variableValues, operationName, context);
      // A cost the variables do not fit (null) is not kept: execution reports those variables' error.
      if (cost !== null && costs.size < costsPerOperation) costs.set(key, cost);
      return cost;
    },
  };
}

/**
 * Bounds on what one request may ask, from `[Limits]`, as Yoga plugins: tokens and nesting while
 * parsing, depth, aliases and directives while validating (cached with the document), then the paid
 * operations and the cost (which depend on the variables and the operation chosen) before anything
 * executes. A refused request runs nothing, and its error carries the limit's code.
 */
export function createQueryLimitPlugins(limits: QueryLimits): Plugin[] {
  const rules = armorRules(limits);
  const costs = createCostCache();
  return [
    {
      onParse({ setParseFn }) {
        setParseFn((source, options) => parseWithinLimits(source, limits, options));
      },
      onValidate({ addValidationRule, validateFn, setValidationFn }) {
        for (const rule of rules) addValidationRule(rule);
        setValidationFn((...args) => {
          try {
            return validateFn(...args);
          } catch (error) {
            // Fragments that spread one another can nest deeply with few tokens.
            if (isStackOverflow(error)) return [toGraphQLError(tooDeep(limits, error))];
            throw error;
          }
        });
      },
      // A subscription's events are executed like a query: its selection is bounded the same way.
      onExecute: checkBeforeRunning,
      onSubscribe: checkBeforeRunning,
    },
  ];

  function checkBeforeRunning({ args, setResultAndStopExecution }: { args: ExecutionArgs; setResultAndStopExecution(result: ExecutionResult): void }): void {
    const refuse = (error: QueryLimitError) => setResultAndStopExecution({ errors: [toGraphQLError(error)] });
    const paid = costs.paidFields(args.schema, args.document, args.operationName);
    if (paid > limits.maxPaidOperations) {
      return refuse(
        new QueryLimitError('MAX_PAID_OPERATIONS', `The request asks for ${paid} model calls; at most ${limits.maxPaidOperations} are allowed per request ([Limits] MAX_PAID_OPERATIONS).`, {
          max: limits.maxPaidOperations,
          actual: paid,
        }),
      );
    }
    let cost: number | null;
    try {
      cost = costs.cost(args.schema, args.document, args.variableValues ?? undefined, args.operationName, args.contextValue);
    } catch (error) {
      // A field's complexity function may refuse its arguments: execution reports that error.
      if (isCallboardError(error)) return;
      throw error;
    }
    if (cost !== null && cost > limits.maxQueryCost) {
      return refuse(
        new QueryLimitError('MAX_QUERY_COST', `The query would cost ${cost}; at most ${limits.maxQueryCost} is allowed ([Limits] MAX_QUERY_COST). Ask for smaller pages or fewer nested lists.`, {
          max: limits.maxQueryCost,
          actual: cost,
        }),
      );
    }
  }
}

/** Characters of query text the parse caches hold in all. @default 16 MiB */
const parseCacheCharacters = 16 * 1024 * 1024;

/**
 * Yoga's caches of parsed documents and parse errors, keyed by the query text, bounded by the
 * characters they hold rather than only by their 1,024 entries: with the default caches, 1,024
 * distinct 5 MB queries refused at MAX_QUERY_TOKENS would keep 5 GB alive for an hour. A text larger
 * than the whole bound is not kept at all.
 */
export function createParseCaches() {
  const cache = <T extends object>() =>
    new LRUCache<string, T>({ max: 1024, ttl: 3_600_000, maxSize: parseCacheCharacters, sizeCalculation: (_value, key) => Math.max(1, key.length) });
  return { documentCache: cache<DocumentNode>(), errorCache: cache<object>() };
}
