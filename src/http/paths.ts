// Where the endpoint keeps its files, in one place (until the project has one paths
// module). The token must outlive restarts and reboots, so it lives under /var/lib; the
// record of a running endpoint is runtime state, next to the setup records of its
// network namespace.
import { join } from "node:path";
import { netnsDir } from "../netfilter/record.js";

/** NFLB_HTTP_TOKEN_FILE moves it (tests, several services on one machine). */
export function tokenFilePath(): string {
  return process.env.NFLB_HTTP_TOKEN_FILE || "/var/lib/nflb/http-token";
}

/** The address of this namespace's running endpoint, for `nflb dashboard-url`. */
export function endpointRecordPath(): string {
  return join(netnsDir(), "http.json");
}
