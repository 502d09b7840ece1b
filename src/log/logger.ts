// Leveled logging to stderr. Never called per packet: the data path counts, the log tells.

export const LOG_LEVELS = ["warning", "notice", "info", "debug"] as const;
export type LogLevelName = (typeof LOG_LEVELS)[number];

/** Syslog severities, so levels compare the usual way (higher = more verbose). */
export const LEVEL_VALUE: Record<LogLevelName, number> = {
  warning: 4,
  notice: 5,
  info: 6,
  debug: 7,
};

export function parseLogLevel(text: string): number {
  const value = LEVEL_VALUE[text as LogLevelName];
  if (value === undefined) {
    throw new Error(`invalid log level "${text}": expected one of ${LOG_LEVELS.join(", ")}`);
  }
  return value;
}

export function levelName(value: number): LogLevelName {
  return LOG_LEVELS.find((name) => LEVEL_VALUE[name] === value) ?? "notice";
}

export class Logger {
  constructor(
    private readonly tag: string,
    public level: number = LEVEL_VALUE.notice,
  ) {}

  private write(value: number, name: LogLevelName, message: string): void {
    if (value > this.level) return;
    process.stderr.write(
      `${new Date().toISOString()} ${this.tag}[${process.pid}] ${name}: ${message}\n`,
    );
  }

  warning(message: string): void {
    this.write(LEVEL_VALUE.warning, "warning", message);
  }

  notice(message: string): void {
    this.write(LEVEL_VALUE.notice, "notice", message);
  }

  info(message: string): void {
    this.write(LEVEL_VALUE.info, "info", message);
  }

  debug(message: string): void {
    this.write(LEVEL_VALUE.debug, "debug", message);
  }
}
