// The include file on disk. I/O. Written whole or not at all (temporary file, fsync,
// rename), so BIRD never reads half a file, whenever it happens to (re)start.
import { constants } from "node:fs";
import { open, readFile, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { BgpError } from "./types.js";

/** The file's text, or undefined when there is none. */
export async function readInclude(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new BgpError("io", `cannot read ${path}: ${(err as Error).message}`);
  }
}

/**
 * Replaces the file atomically. Mode 0640 (it may hold BGP passwords), group of the
 * directory: on Debian /etc/bird belongs to the group BIRD runs as, which must read it.
 */
export async function writeInclude(path: string, text: string): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.tmp`);
  try {
    const gid = (await stat(dir)).gid;
    const f = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o640);
    try {
      await f.chown(process.getuid?.() ?? 0, gid).catch(() => undefined);
      await f.chmod(0o640);
      await f.writeFile(text, "utf8");
      await f.sync();
    } finally {
      await f.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw new BgpError("io", `cannot write ${path}: ${(err as Error).message}`);
  }
}
