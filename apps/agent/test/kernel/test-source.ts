import type { ConfigSnapshot } from '../../src/config/objects.js';
import type { ConfigSource, ConfigUpdate } from '../../src/config/source.js';

/** A config source the test drives: start() delivers the first snapshot, push() the next ones. It keeps no
 *  snapshot it delivered (first-config-released checks that the agent does not either). */
export class TestSource implements ConfigSource {
  readonly description = 'test';
  private deliver: ((u: ConfigUpdate) => void) | undefined;
  private first: ConfigSnapshot | undefined;
  constructor(first: ConfigSnapshot) {
    this.first = first;
  }
  start(onUpdate: (u: ConfigUpdate) => void): void {
    this.deliver = onUpdate;
    const first = this.first!;
    this.first = undefined;
    onUpdate({ snapshot: first, revision: 'first' });
  }
  push(snapshot: ConfigSnapshot, revision: string): void {
    this.deliver!({ snapshot, revision });
  }
  stop(): void {}
}
