// `nflb lb`'s log level lives in its load balancer's shared state, so that `nflb loglevel`
// changes it while the daemon runs: this follows it (every 100 ms) and applies it to the
// logger. A state file deleted and created again (nflb delete + init) is reopened.
import { statSync } from "node:fs";
import { LEVEL_VALUE, type LogLevelName, levelName } from "../log/logger.js";
import { openState, type StateFile, tryOpenState } from "../state/store.js";

/** How often the shared log level is looked at. */
const LOG_LEVEL_POLL_MS = 100;

export interface LevelledLog {
  level: number;
}

/**
 * Starts following the level stored in `name`'s state. With `keepStored` a valid stored
 * level replaces the logger's; otherwise the logger's level is stored. `say` logs the
 * change (at notice, whatever the old level). Throws when the state does not exist.
 */
export function followLogLevel(
  name: string,
  log: LevelledLog,
  keepStored: boolean,
  say: (level: LogLevelName, message: string) => void,
): { stop(): void } {
  let state: StateFile = openState(name);
  const valid = (l: number) => l >= LEVEL_VALUE.warning && l <= LEVEL_VALUE.debug;
  const stored = state.logLevel();
  if (keepStored && valid(stored)) log.level = stored;
  else state.setLogLevel(log.level);
  let polls = 0;
  const follow = () => {
    // Once a second: a re-created state file (nflb delete + init) has its own level word.
    if (++polls % 10 === 0) {
      try {
        if (statSync(state.path).ino !== state.inode) {
          const fresh = tryOpenState(name);
          if (fresh) {
            state.close();
            state = fresh;
            if (fresh.logLevel() < 0) fresh.setLogLevel(log.level);
          }
        }
      } catch {
        // deleted: keep the current level until it comes back
      }
    }
    const level = state.logLevel();
    if (valid(level) && level !== log.level) {
      log.level = Math.max(log.level, LEVEL_VALUE.notice);
      say("notice", `log level ${levelName(level)}`);
      log.level = level;
    }
  };
  const timer = setInterval(follow, LOG_LEVEL_POLL_MS);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      state.close();
    },
  };
}
