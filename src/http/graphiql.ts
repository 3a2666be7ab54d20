import type { GraphiQLOptions } from 'graphql-yoga';
import { createStaticAssets, type StaticAsset } from './static-assets.ts';

/** Where GraphiQL's files are served: `/graphiql-assets/<version>/graphiql.js`, ... */
export const graphiqlAssetsPrefix = '/graphiql-assets';

/**
 * Runs before GraphiQL's script: tells Monaco (its editor) where its workers are, then renders the
 * page once the document is parsed. Read from the page: the options and the workers' URLs, as JSON.
 */
const startScript = `(function () {
  function read(id) { return JSON.parse(document.getElementById(id).textContent); }
  var workers = read('graphiql-workers');
  self.MonacoEnvironment = { globalAPI: false, getWorkerUrl: function (moduleId, label) { return workers[label]; } };
  document.addEventListener('DOMContentLoaded', function () {
    YogaGraphiQL.renderYogaGraphiQL(document.getElementById('root'), read('graphiql-options'));
  });
})();
`;

/** JSON to put inside a <script> element: `<` escaped, so no `</script>` (or `<!--`) can end it early. */
const scriptJson = (value: unknown) => JSON.stringify(value).replace(/</g, '\\u003c');

const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (character) => `&#${character.charCodeAt(0)};`);

/**
 * GraphiQL as a small page and files served by Callboard itself (no CDN: it works offline): the
 * script, styles, icon and Monaco's workers of @graphql-yoga/render-graphiql, which would otherwise
 * inline all of them (9 MB) into every page. The files are read on the first request for the page
 * or a file (never at start), and served immutable, cached and compressed (static-assets.ts).
 */
export function createGraphiQL() {
  const assets = createStaticAssets({
    prefix: graphiqlAssetsPrefix,
    load: async (): Promise<StaticAsset[]> => {
      const packaged = await import('@graphql-yoga/render-graphiql/graphiql');
      const icon = /^data:([^;,]+);base64,(.*)$/s.exec(packaged.favicon);
      return [
        { name: 'start.js', body: startScript },
        { name: 'graphiql.js', body: packaged.js },
        { name: 'graphiql.css', body: packaged.css },
        { name: 'editor.worker.js', body: packaged.editorWorkerService },
        { name: 'json.worker.js', body: packaged.jsonWorker },
        { name: 'graphql.worker.js', body: packaged.graphqlWorker },
        ...(icon ? [{ name: 'favicon.ico', body: Buffer.from(icon[2]!, 'base64'), contentType: icon[1]! }] : []),
      ];
    },
  });

  /** Yoga's `renderGraphiQL`: the page, a few kilobytes, referring to the files by URL. */
  async function render(options: GraphiQLOptions | undefined): Promise<string> {
    const urls = await assets.urls();
    const workers = { editorWorkerService: urls['editor.worker.js'], json: urls['json.worker.js'], graphql: urls['graphql.worker.js'] };
    return `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <title>${escapeHtml(options?.title ?? 'GraphiQL')}</title>
    ${urls['favicon.ico'] ? `<link rel="icon" href="${urls['favicon.ico']}" />` : ''}
    <link rel="stylesheet" href="${urls['graphiql.css']}" />
  </head>
  <body id="body" class="no-focus-outline">
    <noscript>You need to enable JavaScript to run this app.</noscript>
    <div id="root"></div>
    <script type="application/json" id="graphiql-options">${scriptJson(options ?? {})}</script>
    <script type="application/json" id="graphiql-workers">${scriptJson(workers)}</script>
    <script src="${urls['start.js']}"></script>
    <script src="${urls['graphiql.js']}"></script>
  </body>
</html>
`;
  }

  return { plugin: assets.plugin, render };
}
