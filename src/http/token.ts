// The endpoint's token: 32 random bytes, created at first start in a file only root can
// read (0600), then read at every start. Creation is atomic (written aside, then linked
// into place), so two processes starting at once agree on one token.
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  closeSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";
import { dashboardTokenPath } from "../paths.js";

/** What a token may look like: what we generate (base64url), or an operator's own. */
const TOKEN_PATTERN = /^[A-Za-z0-9._~+/=-]{16,256}$/;

export interface TokenFile {
  token: string;
  path: string;
  /** Made by this call. */
  created: boolean;
  /** The file was readable by others and was set back to 0600. */
  fixedMode: boolean;
}

export function generateToken(): string {
  return randomBytes(32).toString("base64url");
}

function createExclusive(path: string): boolean {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  const fd = openSync(tmp, "wx", 0o600);
  try {
    writeSync(fd, `${generateToken()}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(tmp, path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  } finally {
    unlinkSync(tmp);
  }
}

/** Reads the token file; undefined when it does not exist. */
export function readTokenFile(path: string = dashboardTokenPath()): string | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new Error(`cannot read the token file ${path}: ${(err as Error).message}`);
  }
  const token = text.trim();
  if (!TOKEN_PATTERN.test(token)) {
    throw new Error(
      `the token file ${path} holds no valid token (16-256 URL-safe characters): remove it to get a new one`,
    );
  }
  return token;
}

/** The token, created on first use. */
export function loadOrCreateToken(path: string = dashboardTokenPath()): TokenFile {
  let created = false;
  let token = readTokenFile(path);
  if (token === undefined) {
    created = createExclusive(path);
    token = readTokenFile(path);
    if (token === undefined) throw new Error(`the token file ${path} vanished while created`);
  }
  let fixedMode = false;
  if ((statSync(path).mode & 0o077) !== 0) {
    chmodSync(path, 0o600);
    fixedMode = true;
  }
  return { token, path, created, fixedMode };
}
