// Who may use the HTTP endpoint: the pure decision for each kind of request, the listen
// address rules it rests on, and the token file.
import assert from "node:assert/strict";
import { chmodSync, statSync, writeFileSync } from "node:fs";
import { after, describe, test } from "node:test";
import {
  dashboardUrl,
  endpointOrigin,
  isLoopbackHost,
  isLoopbackHostHeader,
  parseListen,
} from "../../src/http/address.js";
import { type AuthPolicy, authorize, cookieValue, type RequestFacts } from "../../src/http/auth.js";
import { loadOrCreateToken, readTokenFile } from "../../src/http/token.js";
import { tempTokenFile } from "../helpers/dashboard.js";

const TOKEN = "s3cr3t-t0ken-0123456789abcdef";
const offLoopback: AuthPolicy = {
  tokenRequired: true,
  loopbackHostOnly: false,
  token: TOKEN,
  cookieName: "nflb_token",
};
const loopback: AuthPolicy = { ...offLoopback, tokenRequired: false, loopbackHostOnly: true };

const get = (extra: Partial<RequestFacts> = {}): RequestFacts => ({
  method: "GET",
  isAction: false,
  host: "10.0.0.1:9473",
  ...extra,
});
const post = (extra: Partial<RequestFacts> = {}): RequestFacts => ({
  method: "POST",
  isAction: true,
  host: "10.0.0.1:9473",
  actionHeader: "1",
  ...extra,
});

describe("authorization off loopback", () => {
  test("no token: 401", () => {
    assert.deepEqual(authorize(offLoopback, get()), {
      allow: false,
      status: 401,
      reason: "token required (see nflb dashboard-url)",
    });
  });

  test("the token as bearer, cookie or ?token= lets a read in", () => {
    assert.deepEqual(authorize(offLoopback, get({ authorization: `Bearer ${TOKEN}` })), {
      allow: true,
      via: "bearer",
    });
    assert.deepEqual(authorize(offLoopback, get({ cookie: `a=b; nflb_token=${TOKEN}; c=d` })), {
      allow: true,
      via: "cookie",
    });
    assert.deepEqual(authorize(offLoopback, get({ queryToken: TOKEN })), {
      allow: true,
      via: "query",
    });
  });

  test("a wrong token is refused, whatever else is offered", () => {
    const d = authorize(
      offLoopback,
      get({ authorization: "Bearer nope", queryToken: `${TOKEN}x` }),
    );
    assert.deepEqual(d, { allow: false, status: 401, reason: "wrong token" });
    assert.equal(authorize(offLoopback, get({ cookie: "nflb_token=" })).allow, false);
    assert.equal(authorize(offLoopback, get({ authorization: TOKEN })).allow, false, "not Bearer");
  });

  test("actions: ?token= is not accepted (URLs leak), the cookie or bearer is", () => {
    assert.equal(authorize(offLoopback, post({ queryToken: TOKEN })).allow, false);
    assert.deepEqual(authorize(offLoopback, post({ cookie: `nflb_token=${TOKEN}` })), {
      allow: true,
      via: "cookie",
    });
  });

  test("actions need the action header and a same-origin request, even with the token", () => {
    const auth = { cookie: `nflb_token=${TOKEN}` };
    assert.equal(authorize(offLoopback, post({ ...auth, actionHeader: undefined })).allow, false);
    const crossOrigin = authorize(offLoopback, post({ ...auth, origin: "http://evil.example" }));
    assert.deepEqual(crossOrigin, {
      allow: false,
      status: 403,
      reason: "cross-site request refused",
    });
    assert.equal(authorize(offLoopback, post({ ...auth, origin: "null" })).allow, false);
    assert.equal(
      authorize(offLoopback, post({ ...auth, secFetchSite: "cross-site" })).allow,
      false,
    );
    assert.equal(authorize(offLoopback, post({ ...auth, secFetchSite: "same-site" })).allow, false);
    assert.equal(
      authorize(
        offLoopback,
        post({ ...auth, origin: "http://10.0.0.1:9473", secFetchSite: "same-origin" }),
      ).allow,
      true,
    );
  });

  test("unauthenticated actions get 401 before any other check", () => {
    assert.equal(
      (authorize(offLoopback, post({ actionHeader: undefined })) as { status: number }).status,
      401,
    );
  });
});

describe("authorization on loopback", () => {
  test("no token needed when the Host names loopback", () => {
    for (const host of [
      "127.0.0.1:9473",
      "[::1]:9473",
      "localhost:8080",
      "localhost",
      "127.1.2.3",
    ]) {
      assert.deepEqual(authorize(loopback, get({ host })), { allow: true, via: "open" }, host);
    }
  });

  test("another Host (DNS rebinding) is refused, with or without a token", () => {
    for (const host of [
      "evil.example:9473",
      "10.0.0.1:9473",
      undefined,
      "127.0.0.1.evil.example",
    ]) {
      const d = authorize(loopback, get({ host, queryToken: TOKEN }));
      assert.equal(d.allow, false, String(host));
      assert.equal((d as { status: number }).status, 403);
    }
  });

  test("actions still need the header and same origin (a page on another site must not act)", () => {
    assert.equal(
      authorize(loopback, post({ host: "127.0.0.1:9473", actionHeader: undefined })).allow,
      false,
    );
    assert.equal(
      authorize(loopback, post({ host: "127.0.0.1:9473", origin: "http://evil.example" })).allow,
      false,
    );
    assert.equal(
      authorize(loopback, post({ host: "127.0.0.1:9473", origin: "http://127.0.0.1:9473" })).allow,
      true,
    );
  });

  test("a token can be required on loopback too (several users on one machine)", () => {
    const strict = { ...loopback, tokenRequired: true };
    assert.equal(authorize(strict, get({ host: "127.0.0.1:9473" })).allow, false);
    assert.equal(authorize(strict, get({ host: "127.0.0.1:9473", queryToken: TOKEN })).allow, true);
  });
});

describe("listen addresses", () => {
  test("loopback or not decides the token", () => {
    for (const h of ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "localhost"]) {
      assert.equal(isLoopbackHost(h), true, h);
    }
    for (const h of ["0.0.0.0", "::", "10.0.0.1", "fd00::1", "::ffff:10.0.0.1"]) {
      assert.equal(isLoopbackHost(h), false, h);
    }
  });

  test("parsing: IPv4, IPv6 in brackets, port alone; names other than localhost are refused", () => {
    assert.deepEqual(parseListen("9000"), { host: "127.0.0.1", port: 9000 });
    assert.deepEqual(parseListen("[fd00::1]:9000"), { host: "fd00::1", port: 9000 });
    assert.deepEqual(parseListen("0.0.0.0:80"), { host: "0.0.0.0", port: 80 });
    assert.throws(() => parseListen("example.com:80"), /IP address or localhost/);
    assert.throws(() => parseListen("fd00::1:80"), /\[ADDR\]:PORT/);
    assert.throws(() => parseListen("127.0.0.1:70000"), /PORT 1..65535/);
  });

  test("URLs: brackets for IPv6, the token only when given", () => {
    assert.equal(endpointOrigin({ host: "::1", port: 9473 }), "http://[::1]:9473");
    assert.equal(dashboardUrl({ host: "127.0.0.1", port: 1 }), "http://127.0.0.1:1/");
    assert.equal(
      dashboardUrl({ host: "10.0.0.1", port: 2 }, "a+b"),
      "http://10.0.0.1:2/?token=a%2Bb",
    );
  });

  test("Host headers", () => {
    assert.equal(isLoopbackHostHeader("[::1]:80"), true);
    assert.equal(isLoopbackHostHeader("[::1"), false);
    assert.equal(isLoopbackHostHeader(""), false);
    assert.equal(isLoopbackHostHeader("localhost.evil.example"), false);
  });

  test("cookies", () => {
    assert.equal(cookieValue("x=1; nflb_token=abc", "nflb_token"), "abc");
    assert.equal(cookieValue("nflb_token_2=abc", "nflb_token"), undefined);
    assert.equal(cookieValue(undefined, "nflb_token"), undefined);
  });
});

describe("token file", () => {
  const tmp = tempTokenFile();
  after(() => tmp.cleanup());

  test("created at first use, 0600, random, then read back unchanged", () => {
    const first = loadOrCreateToken(tmp.path);
    assert.equal(first.created, true);
    assert.match(first.token, /^[A-Za-z0-9_-]{43}$/, "32 random bytes, base64url");
    assert.equal(statSync(tmp.path).mode & 0o777, 0o600);
    const again = loadOrCreateToken(tmp.path);
    assert.deepEqual({ ...again, created: false }, { ...first, created: false });
    assert.equal(again.created, false);
  });

  test("a file readable by others is set back to 0600", () => {
    chmodSync(tmp.path, 0o644);
    assert.equal(loadOrCreateToken(tmp.path).fixedMode, true);
    assert.equal(statSync(tmp.path).mode & 0o777, 0o600);
  });

  test("a damaged file is an error that says what to do, not a silent new token", () => {
    writeFileSync(tmp.path, "not a token\n");
    assert.throws(() => readTokenFile(tmp.path), /holds no valid token.*remove it/);
  });
});
