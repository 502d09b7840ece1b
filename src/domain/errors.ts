// The error every domain parser throws: its message is complete and fit for one line,
// so callers either show it as it is or prefix it with what they were reading.

export class DomainError extends Error {
  override name = "DomainError";
}

/** Runs `parse` and rethrows a DomainError as the caller's own error class (same message). */
export function rethrowAs<T>(ErrorClass: new (message: string) => Error, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof DomainError) throw new ErrorClass(err.message);
    throw err;
  }
}
