/**
 * Retries of registry requests: which failures are worth another attempt (dropped connections, timeouts,
 * 429/5xx answers), exponential backoff with jitter that honours `Retry-After`, and abortable sleeps.
 * @module
 */
import { GraphdriverError } from '../errors';

/** How requests are retried. */
export interface RetryOptions {
  /** Attempts in all, the first one included (default 5). */
  attempts?: number;
  /** Delay before the second attempt; doubled each time (default 250 ms). */
  baseDelayMs?: number;
  /** Longest delay between attempts, `Retry-After` included (default 15 s). */
  maxDelayMs?: number;
}

/** Retry settings with every default filled in. */
export interface RetryPolicy {
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

/** Fills the defaults of {@link RetryOptions}. */
export function retryPolicy(o: RetryOptions = {}): RetryPolicy {
  const attempts = o.attempts ?? 5;
  const baseDelayMs = o.baseDelayMs ?? 250;
  const maxDelayMs = o.maxDelayMs ?? 15_000;
  if (!Number.isInteger(attempts) || attempts < 1) throw new TypeError('retry.attempts must be an integer >= 1');
  if (!(baseDelayMs >= 0) || !(maxDelayMs >= 0)) throw new TypeError('retry delays must be >= 0');
  return { attempts, baseDelayMs, maxDelayMs };
}

/**
 * No byte arrived for too long: the attempt is dropped (and retried or resumed like a cut connection).
 *
 * @example
 * ```ts
 * import { IdleTimeoutError, RegistryError, Storage } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * try {
 *   // a blob on which nothing arrives for 30 s is resumed; once the attempts are spent the pull fails
 *   await store.pullImage('busybox:latest', { idleTimeoutMs: 30_000, retry: { attempts: 3 } });
 * } catch (e) {
 *   if (!(e instanceof RegistryError && e.cause instanceof IdleTimeoutError)) throw e;
 *   console.error(e.cause.code, e.cause.message); // 'ERR_REGISTRY_TIMEOUT' blob sha256:...: no data for 30000 ms
 * }
 * ```
 */
export class IdleTimeoutError extends GraphdriverError {
  constructor(what: string, ms: number) {
    super('ERR_REGISTRY_TIMEOUT', `${what}: no data for ${ms} ms`);
  }
}

/** HTTP statuses that say "try again later" rather than "no". */
export function isTransientStatus(status: number): boolean {
  return status === 408 || status === 429 || status === 500 || status === 502 || status === 503 || status === 504;
}

const TRANSIENT_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'ENETUNREACH',
  'ENETDOWN',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'ERR_REGISTRY_TIMEOUT',
]);

/** Every error in the `cause` chain (fetch wraps the socket error in a TypeError). */
function causes(e: unknown): unknown[] {
  const out: unknown[] = [];
  for (let c: unknown = e; c !== undefined && c !== null && out.length < 8; c = (c as { cause?: unknown }).cause) {
    out.push(c);
    if (typeof c !== 'object') break;
    // Happy-eyeballs connection attempts fail as an AggregateError of one error per address.
    if (c instanceof AggregateError) out.push(...c.errors.slice(0, 8));
  }
  return out;
}

function codeOf(e: unknown): string {
  return typeof e === 'object' && e !== null && typeof (e as { code?: unknown }).code === 'string' ? (e as { code: string }).code : '';
}

/** Whether a thrown error is a network failure another attempt may cure (not an abort, not a TLS or DNS refusal). */
export function isTransientError(e: unknown): boolean {
  if (isAbortError(e)) return false;
  for (const c of causes(e)) {
    if (TRANSIENT_CODES.has(codeOf(c))) return true;
    // undici reports a body cut short as TypeError('terminated') and some socket closes without a code.
    if (c instanceof Error && (c.message === 'terminated' || c.message === 'other side closed')) return true;
  }
  return false;
}

/** Whether the error comes from a TLS handshake with a peer that does not speak TLS (an http-only registry). */
export function isTlsProtocolError(e: unknown): boolean {
  return causes(e).some((c) => {
    const code = codeOf(c);
    return code === 'EPROTO' || code.startsWith('ERR_SSL_') || (c instanceof Error && /wrong version number|packet length too long|http request/i.test(c.message));
  });
}

/** Whether the error is an abort (AbortSignal), which is never retried. */
export function isAbortError(e: unknown): boolean {
  return typeof e === 'object' && e !== null && ((e as { name?: unknown }).name === 'AbortError' || codeOf(e) === 'ABORT_ERR');
}

/** Seconds or an HTTP date in `Retry-After`, as milliseconds from now (null when absent or unreadable). */
export function parseRetryAfter(v: string | null, now = Date.now()): number | null {
  if (v === null) return null;
  const t = v.trim();
  if (/^\d+$/.test(t)) return Number(t) * 1000;
  const d = Date.parse(t);
  return Number.isNaN(d) ? null : Math.max(0, d - now);
}

/**
 * Delay before attempt `attempt + 1` (`attempt` counts from 1): `base * 2^(attempt-1)` with ±50% jitter so that
 * concurrent downloads hit by the same outage do not come back in lockstep; a server's `Retry-After` wins when
 * longer. Capped at `maxDelayMs`.
 */
export function backoffDelay(attempt: number, p: RetryPolicy, retryAfterMs: number | null = null): number {
  const exp = p.baseDelayMs * 2 ** Math.min(attempt - 1, 20);
  const jittered = exp * (0.5 + Math.random());
  return Math.min(p.maxDelayMs, Math.max(jittered, retryAfterMs ?? 0));
}

/** The abort reason as an error (a DOMException AbortError when the signal was aborted without one). */
export function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

/** Throws the abort reason when `signal` is aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortReason(signal);
}

/** Waits `ms`, rejecting with the abort reason as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortReason(signal));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(t);
      reject(abortReason(signal!));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
