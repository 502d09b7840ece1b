// nflb dashboard-url: the address of the dashboard to open, with the token when the
// endpoint needs one. The endpoint's address comes from the running endpoint of this
// network namespace (its record), else from --listen, else the default.
import type { Command } from "commander";
import {
  DEFAULT_HTTP_HOST,
  DEFAULT_HTTP_PORT,
  dashboardUrl,
  endpointOrigin,
  isLoopbackHost,
  type ListenAddress,
  parseListen,
} from "../http/address.js";
import { readEndpointRecord } from "../http/record.js";
import { loadOrCreateToken } from "../http/token.js";
import { action, CliError, printJson } from "./common.js";

interface DashboardUrlOptions {
  listen?: string;
  json?: boolean;
}

export interface DashboardUrl {
  url: string;
  origin: string;
  tokenRequired: boolean;
  /** Only when required; null on loopback. */
  token: string | null;
  tokenFile: string | null;
  /** An endpoint runs in this network namespace (its record names a live process). */
  running: boolean;
}

export function resolveDashboardUrl(opts: DashboardUrlOptions): DashboardUrl {
  const record = readEndpointRecord();
  let address: ListenAddress;
  let tokenRequired: boolean;
  if (opts.listen !== undefined) {
    try {
      address = parseListen(opts.listen);
    } catch (err) {
      throw new CliError(`--listen: ${(err as Error).message}`);
    }
    tokenRequired = !isLoopbackHost(address.host);
  } else if (record) {
    address = { host: record.host, port: record.port };
    tokenRequired = record.tokenRequired;
  } else {
    address = { host: DEFAULT_HTTP_HOST, port: DEFAULT_HTTP_PORT };
    tokenRequired = false;
  }
  const token = tokenRequired ? loadOrCreateToken() : undefined;
  return {
    url: dashboardUrl(address, token?.token),
    origin: endpointOrigin(address),
    tokenRequired,
    token: token?.token ?? null,
    tokenFile: token?.path ?? null,
    running: record !== undefined,
  };
}

export function registerDashboardCommands(program: Command): void {
  program
    .command("dashboard-url")
    .description(
      "print the URL of the dashboard (nflb run's HTTP endpoint), with its token when bound off loopback",
    )
    .option(
      "--listen <[host:]port>",
      `the endpoint's address (default: the running endpoint's, else ${DEFAULT_HTTP_HOST}:${DEFAULT_HTTP_PORT})`,
    )
    .option("--json", "machine-readable output")
    .action(
      action((opts: DashboardUrlOptions) => {
        const result = resolveDashboardUrl(opts);
        if (opts.json) {
          printJson(result);
          return;
        }
        process.stdout.write(`${result.url}\n`);
        if (!result.running && opts.listen === undefined) {
          process.stderr.write(
            "nflb: no running endpoint in this network namespace: the default address is shown\n",
          );
        }
      }),
    );
}
