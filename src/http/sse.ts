// Server-sent events: the clients of the live stream, bounded in number and in what may
// wait in each one's socket. A client that does not keep up is dropped (its browser
// reconnects and starts from a fresh snapshot) rather than buffered without end.
import type { ServerResponse } from "node:http";

export interface SseOptions {
  maxClients: number;
  /** Bytes that may wait in one client's socket before it is dropped. */
  maxBuffered: number;
  /** How long a browser waits before reconnecting. */
  retryMs: number;
}

export class SseHub {
  private readonly clients = new Set<ServerResponse>();
  /** Clients dropped for falling behind, since the start. */
  dropped = 0;

  constructor(private readonly options: SseOptions) {}

  get size(): number {
    return this.clients.size;
  }

  /** Takes a response over as an event stream; false (and nothing sent) when full. */
  add(res: ServerResponse, headers: Record<string, string>): boolean {
    if (this.clients.size >= this.options.maxClients) return false;
    res.writeHead(200, {
      ...headers,
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-store",
      "X-Accel-Buffering": "no",
    });
    res.write(`retry: ${this.options.retryMs}\n\n`);
    this.clients.add(res);
    res.on("close", () => this.clients.delete(res));
    return true;
  }

  /** Sends one event to a client (a new one gets the current state at once). */
  send(res: ServerResponse, event: string, data: string): void {
    if (res.writableLength > this.options.maxBuffered) {
      this.dropped += 1;
      this.clients.delete(res);
      res.destroy();
      return;
    }
    res.write(`event: ${event}\ndata: ${data}\n\n`);
  }

  broadcast(event: string, data: string): void {
    for (const res of this.clients) this.send(res, event, data);
  }

  closeAll(): void {
    for (const res of this.clients) res.end();
    this.clients.clear();
  }
}
