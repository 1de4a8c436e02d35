/**
 * A small typed event emitter. A listener that throws does not stop the client or the other listeners: its
 * error is reported the way the platform reports uncaught errors (`reportError` in browsers).
 */
export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<(event: never) => void>>();

  /** Calls `listener` for every `type` event until the returned function is called. */
  on<K extends keyof Events>(type: K, listener: (event: Events[K]) => void): () => void {
    let set = this.listeners.get(type);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(type, set);
    }
    set.add(listener as (event: never) => void);
    return () => this.off(type, listener);
  }

  off<K extends keyof Events>(type: K, listener: (event: Events[K]) => void): void {
    this.listeners.get(type)?.delete(listener as (event: never) => void);
  }

  protected emit<K extends keyof Events>(type: K, event: Events[K]): void {
    const set = this.listeners.get(type);
    if (set === undefined) return;
    for (const listener of [...set]) {
      try {
        (listener as (event: Events[K]) => void)(event);
      } catch (error) {
        report(error);
      }
    }
  }
}

function report(error: unknown): void {
  const platform = globalThis as { reportError?: (error: unknown) => void };
  if (typeof platform.reportError === "function") {
    platform.reportError(error);
  } else {
    queueMicrotask(() => {
      throw error;
    });
  }
}
