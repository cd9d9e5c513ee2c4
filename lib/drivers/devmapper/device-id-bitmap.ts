/**
 * Thin device ids: the kernel's thin-pool names devices by 24-bit numbers. Which ids this driver uses is kept in a
 * bitmap, and new ids are handed out round-robin after the last one given (as Docker's getNextFreeDeviceID), so a
 * freed id is not reused until the counter wraps around: a half-deleted device never meets a new one.
 * @module
 */

/** Largest thin device id (the kernel accepts 24 bits). */
export const MAX_DEVICE_ID = 0xffffff;

/** Used/free state of every device id 0..max, plus the round-robin cursor. */
export class DeviceIdBitmap {
  private readonly bits: Uint8Array;
  private usedCount = 0;

  /**
   * @param next the last id handed out (Docker's `next_device_id`); the next allocation starts after it.
   * @param max the largest id (tests use small ones).
   */
  constructor(
    private next = 0,
    readonly max = MAX_DEVICE_ID,
  ) {
    if (!Number.isInteger(max) || max < 1 || max > MAX_DEVICE_ID) throw new RangeError(`device id limit ${max} out of range`);
    this.bits = new Uint8Array((max >> 3) + 1);
    this.next = Number.isInteger(next) && next >= 0 && next <= max ? next : 0;
  }

  /** The cursor to persist (`next_device_id`). */
  get nextId(): number {
    return this.next;
  }

  /** Number of ids marked used. */
  get used(): number {
    return this.usedCount;
  }

  private check(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id > this.max) throw new RangeError(`device id ${id} out of range 0..${this.max}`);
  }

  isFree(id: number): boolean {
    this.check(id);
    return (this.bits[id >> 3]! & (1 << (id & 7))) === 0;
  }

  markUsed(id: number): void {
    this.check(id);
    if (!this.isFree(id)) return;
    this.bits[id >> 3]! |= 1 << (id & 7);
    this.usedCount++;
  }

  markFree(id: number): void {
    this.check(id);
    if (this.isFree(id)) return;
    this.bits[id >> 3]! &= ~(1 << (id & 7));
    this.usedCount--;
  }

  /**
   * Hands out the first free id after the cursor (wrapping around), marks it used and moves the cursor to it.
   * Returns null when every id is used.
   */
  allocate(): number | null {
    for (let i = 0; i <= this.max; i++) {
      this.next = this.next >= this.max ? 0 : this.next + 1;
      if (this.isFree(this.next)) {
        this.markUsed(this.next);
        return this.next;
      }
    }
    return null;
  }
}
