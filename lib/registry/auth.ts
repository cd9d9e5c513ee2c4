/**
 * Registry authentication as Docker does it: a request without credentials meets a 401 whose
 * `WWW-Authenticate` challenge says how to authenticate: `Basic` (the credentials on every request) or `Bearer`
 * (a token for the request's scopes from the realm's token server, anonymous or with the credentials, cached until
 * it expires). The challenge learnt once (e.g. from the `/v2/` ping) is used up front for every later request.
 * @module
 */
import { RegistryAuthError, InsecureRegistryError } from './errors';
import { readLimited } from './body';

/** Credentials for a registry. */
export type Credentials =
  /** User name and password (or personal access token): Basic auth, or sent to the token server. */
  | { username: string; password: string }
  /** A registry bearer token used as is (no token server round trip). */
  | { registryToken: string }
  /** An OAuth2 refresh token (Docker's `identitytoken`) exchanged at the token server. */
  | { identityToken: string };

/** One challenge of a `WWW-Authenticate` header. */
export interface Challenge {
  /** Lowercase scheme: `bearer`, `basic`. */
  scheme: string;
  /** Parameters with lowercase names: realm, service, scope, error. */
  params: Record<string, string>;
}

/**
 * Parses a `WWW-Authenticate` header (RFC 7235): challenges separated by commas, each a scheme followed by
 * `name=value` or `name="quoted value"` parameters. Malformed tails are ignored rather than fatal.
 */
export function parseWwwAuthenticate(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = header.length;
  const skipWs = (): void => {
    while (i < n && (header[i] === ' ' || header[i] === '\t')) i++;
  };
  const token = (): string => {
    const start = i;
    while (i < n && /[!#$%&'*+\-.^_`|~0-9A-Za-z]/.test(header[i]!)) i++;
    return header.slice(start, i);
  };
  let current: Challenge | null = null;
  while (i < n) {
    skipWs();
    if (header[i] === ',') {
      i++;
      continue;
    }
    const start = i;
    const t = token();
    if (t === '') {
      i++; // not a token character: skip it
      continue;
    }
    skipWs();
    if (header[i] === '=' && current !== null && header[i + 1] !== '=') {
      i++;
      skipWs();
      let value = '';
      if (header[i] === '"') {
        i++;
        while (i < n && header[i] !== '"') {
          if (header[i] === '\\' && i + 1 < n) i++;
          value += header[i];
          i++;
        }
        i++; // closing quote
      } else {
        const vs = i;
        while (i < n && header[i] !== ',' && header[i] !== ' ') i++;
        value = header.slice(vs, i);
      }
      current.params[t.toLowerCase()] = value;
    } else if (header[i] === '=') {
      // token68 form (`Negotiate abc==`) or a parameter before any scheme: skip to the next comma.
      while (i < n && header[i] !== ',') i++;
    } else {
      current = { scheme: header.slice(start, start + t.length).toLowerCase(), params: {} };
      out.push(current);
    }
  }
  return out;
}

/** Sends one HTTP request with the client's retries (never follows auth itself). */
export type AuthFetch = (url: URL, init: RequestInit) => Promise<Response>;

/** Options of {@link Authenticator}. */
export interface AuthenticatorOptions {
  /** Registry `host[:port]` (for messages). */
  registry: string;
  credentials?: Credentials;
  /** Sends requests to the token server (retries included). */
  fetch: AuthFetch;
  /** Whether plain http is acceptable for this `host[:port]` (loopback or declared insecure). */
  allowHttp: (hostPort: string) => boolean;
  /** Client id reported to the token server. */
  clientId?: string;
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

/** Docker treats tokens without expires_in as valid for 60 s. */
const DEFAULT_TOKEN_LIFETIME_S = 60;
/** Tokens are renewed this long before they expire, so that a request does not carry one that dies on the way. */
const EXPIRY_MARGIN_MS = 5_000;
/** A token response larger than this is not a token response. */
const MAX_TOKEN_RESPONSE = 1 << 20;

function basicHeader(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`;
}

/**
 * Authenticates the requests of one registry client; see the module documentation.
 *
 * @example
 * ```ts
 * import { Authenticator } from 'graphdriver';
 *
 * const auth = new Authenticator({
 *   registry: 'registry-1.docker.io',
 *   credentials: { username: 'me', password: process.env.TOKEN ?? '' },
 *   fetch: (url, init) => fetch(url, init),
 *   allowHttp: () => false,
 * });
 * auth.learn(await fetch('https://registry-1.docker.io/v2/')); // the 401's challenge: Bearer realm=...
 * const authorization = await auth.authorization(['repository:library/busybox:pull']); // 'Bearer <token>'
 * const res = await fetch('https://registry-1.docker.io/v2/library/busybox/tags/list', { headers: { authorization: authorization ?? '' } });
 * ```
 */
export class Authenticator {
  private challenge: Challenge | null = null;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<string>>();

  constructor(private readonly o: AuthenticatorOptions) {}

  /** The challenge learnt so far (null: the registry has not asked for authentication). */
  get scheme(): string | null {
    return this.challenge?.scheme ?? null;
  }

  /** The `Authorization` value for a request needing `scopes`, or undefined when none is known to be needed. */
  async authorization(scopes: readonly string[], signal?: AbortSignal): Promise<string | undefined> {
    const creds = this.o.credentials;
    if (creds !== undefined && 'registryToken' in creds) return `Bearer ${creds.registryToken}`;
    const c = this.challenge;
    if (c === null) return undefined;
    if (c.scheme === 'basic') {
      if (creds === undefined || !('username' in creds)) return undefined;
      return basicHeader(creds.username, creds.password);
    }
    if (c.scheme === 'bearer') return `Bearer ${await this.token(c, scopes, false, signal)}`;
    return undefined;
  }

  /**
   * Learns from a 401 answer and prepares fresh authorization (a new token for bearer). Resolves to true when
   * another attempt is worthwhile, false when the challenge cannot be answered (no usable scheme, or Basic without
   * credentials). The client calls it at most once per request: a second 401 means access is refused.
   */
  async onUnauthorized(res: Response, scopes: readonly string[], signal?: AbortSignal): Promise<boolean> {
    const creds = this.o.credentials;
    if (creds !== undefined && 'registryToken' in creds) return false; // the given token is all there is
    const header = res.headers.get('www-authenticate');
    const challenges = header === null ? [] : parseWwwAuthenticate(header);
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm !== undefined);
    const basic = challenges.find((c) => c.scheme === 'basic');
    if (bearer) {
      this.challenge = bearer;
      const extra = bearer.params.scope ? bearer.params.scope.split(' ').filter(Boolean) : [];
      await this.token(bearer, scopes, true, signal, extra);
      return true;
    }
    if (basic) {
      this.challenge = basic;
      return creds !== undefined && 'username' in creds;
    }
    return false;
  }

  /** Records the challenge of a ping answer (`GET /v2/` → 401) without fetching anything. */
  learn(res: Response): void {
    const header = res.headers.get('www-authenticate');
    if (header === null) return;
    const cs = parseWwwAuthenticate(header);
    const c = cs.find((x) => x.scheme === 'bearer' && x.params.realm !== undefined) ?? cs.find((x) => x.scheme === 'basic');
    if (c) this.challenge = c;
  }

  private key(c: Challenge, scopes: readonly string[]): string {
    return `${c.params.realm} ${c.params.service ?? ''} ${[...new Set(scopes)].sort().join(' ')}`;
  }

  /**
   * A bearer token for `scopes` from the challenge's realm: cached (under the request's own scopes), or fetched
   * once for concurrent callers. `extraScopes` (from the challenge) are asked for too.
   */
  private async token(c: Challenge, scopes: readonly string[], fresh: boolean, signal?: AbortSignal, extraScopes: readonly string[] = []): Promise<string> {
    const key = this.key(c, scopes);
    if (!fresh) {
      const t = this.tokens.get(key);
      if (t && t.expiresAt > Date.now()) return t.token;
    }
    const inFlight = this.pending.get(key);
    if (inFlight) return inFlight;
    const p = this.fetchToken(c, [...new Set([...scopes, ...extraScopes])].sort(), signal).then(
      (t) => {
        this.tokens.set(key, t);
        this.pending.delete(key);
        return t.token;
      },
      (e: unknown) => {
        this.pending.delete(key);
        throw e;
      },
    );
    this.pending.set(key, p);
    return p;
  }

  private async fetchToken(c: Challenge, scopes: string[], signal?: AbortSignal): Promise<CachedToken> {
    let realm: URL;
    try {
      realm = new URL(c.params.realm!);
    } catch {
      throw new RegistryAuthError(`${this.o.registry}: the token realm ${JSON.stringify(c.params.realm)} is not a URL`);
    }
    if (realm.protocol !== 'https:' && realm.protocol !== 'http:') throw new RegistryAuthError(`${this.o.registry}: unsupported token realm ${realm.href}`);
    if (realm.protocol === 'http:' && !this.o.allowHttp(realm.host)) {
      throw new InsecureRegistryError(realm.host, `the token server ${realm.origin} of ${this.o.registry} is plain HTTP`);
    }
    const creds = this.o.credentials;
    const service = c.params.service;
    let res: Response;
    const base: RequestInit = { redirect: 'follow' };
    if (signal) base.signal = signal;
    if (creds !== undefined && 'identityToken' in creds) {
      // OAuth2 refresh-token grant (Docker's identity tokens).
      const form = new URLSearchParams();
      form.set('grant_type', 'refresh_token');
      form.set('refresh_token', creds.identityToken);
      form.set('client_id', this.o.clientId ?? 'graphdriver');
      if (service !== undefined) form.set('service', service);
      if (scopes.length > 0) form.set('scope', scopes.join(' '));
      res = await this.o.fetch(realm, { ...base, method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString() });
    } else {
      const url = new URL(realm.href);
      if (service !== undefined) url.searchParams.set('service', service);
      for (const s of scopes) url.searchParams.append('scope', s);
      const headers: Record<string, string> = {};
      if (creds !== undefined && 'username' in creds) {
        url.searchParams.set('account', creds.username);
        headers.authorization = basicHeader(creds.username, creds.password);
      }
      res = await this.o.fetch(url, { ...base, method: 'GET', headers });
    }
    const text = await readLimited(res, MAX_TOKEN_RESPONSE);
    if (res.status === 401 || res.status === 403) {
      throw new RegistryAuthError(
        `${this.o.registry}: the token server refused ${creds === undefined ? 'anonymous access' : 'the credentials'} (HTTP ${res.status})` +
          (creds === undefined ? '; pass credentials' : '; check the user name and password'),
        res.status,
      );
    }
    if (!res.ok) throw new RegistryAuthError(`${this.o.registry}: the token server answered HTTP ${res.status}`, res.status);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new RegistryAuthError(`${this.o.registry}: the token server's answer is not JSON`);
    }
    const b = body as { token?: unknown; access_token?: unknown; expires_in?: unknown };
    const token = typeof b.token === 'string' && b.token !== '' ? b.token : typeof b.access_token === 'string' ? b.access_token : '';
    if (token === '') throw new RegistryAuthError(`${this.o.registry}: the token server's answer holds no token`);
    const lifetime = typeof b.expires_in === 'number' && b.expires_in > 0 ? Math.max(b.expires_in, DEFAULT_TOKEN_LIFETIME_S) : DEFAULT_TOKEN_LIFETIME_S;
    return { token, expiresAt: Date.now() + lifetime * 1000 - EXPIRY_MARGIN_MS };
  }
}

