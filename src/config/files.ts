import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { ConfigError } from '../errors.ts';
import type { ConfigFile } from './config.ts';

/** The config files in layering order: the project's own, then the working directory's or CALLBOARD_CONFIG's. */
export function readConfigFiles(environment: NodeJS.ProcessEnv, repositoryRoot: string): ConfigFile[] {
  const projectFile = resolve(repositoryRoot, 'config.ini');
  const userFile = environment.CALLBOARD_CONFIG ? resolve(environment.CALLBOARD_CONFIG) : resolve('config.ini');
  if (environment.CALLBOARD_CONFIG && !existsSync(userFile)) {
    throw new ConfigError([{ source: 'CALLBOARD_CONFIG', section: '', key: 'CALLBOARD_CONFIG', message: `no such file: ${userFile}` }]);
  }
  const paths = [projectFile, ...(userFile === projectFile ? [] : [userFile])].filter((path) => existsSync(path));
  return paths.map((path) => ({ path, text: readFileSync(path, 'utf8') }));
}
