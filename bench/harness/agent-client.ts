/** The coordinator's side of bench/agents/ours-agent: starts the agent process and sends it timed operations. */
import { fork, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';

import type { AgentReply, AgentRequest } from '../agents/ours-agent';

/** Result of one operation run by the agent. */
export interface AgentResult<T = unknown> {
  ms: number;
  value: T;
}

/** A running agent process. */
export class Agent {
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (r: AgentReply) => void; reject: (e: Error) => void }>();

  private constructor(private readonly child: ChildProcess) {
    child.on('message', (r: AgentReply) => {
      const p = this.pending.get(r.seq);
      if (!p) return;
      this.pending.delete(r.seq);
      p.resolve(r);
    });
    // A send to an agent that died (e.g. it could not load the library) reports here: fail the pending calls
    // instead of crashing the coordinator with an unhandled 'error' event.
    child.on('error', (e) => {
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    });
    child.on('exit', (code, signal) => {
      for (const p of this.pending.values()) p.reject(new Error(`agent exited (${code ?? signal})`));
      this.pending.clear();
    });
  }

  /** Starts the agent (compiled next to this file). */
  static start(env: NodeJS.ProcessEnv = process.env): Agent {
    const child = fork(path.join(__dirname, '..', 'agents', 'ours-agent.js'), [], { env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    return new Agent(child);
  }

  /** Runs one operation; rejects with the agent's error message. */
  async call<T = unknown>(op: string, args: Record<string, unknown> = {}): Promise<AgentResult<T>> {
    const seq = ++this.seq;
    const reply = await new Promise<AgentReply>((resolve, reject) => {
      if (!this.child.connected) {
        reject(new Error(`agent is gone (exit ${this.child.exitCode ?? this.child.signalCode ?? '?'})`));
        return;
      }
      this.pending.set(seq, { resolve, reject });
      const req: AgentRequest = { seq, op, args };
      this.child.send(req);
    });
    if (!reply.ok) throw new Error(`ours ${op}: ${reply.error}`);
    return { ms: reply.ms ?? 0, value: reply.value as T };
  }

  /** Stops the agent. */
  stop(): void {
    if (this.child.connected) this.child.disconnect();
  }
}
