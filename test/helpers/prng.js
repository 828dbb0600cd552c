// A small deterministic pseudo-random generator (mulberry32) for seeded
// property tests: the same seed always yields the same sequence.

/**
 * @param {number} seed Any 32-bit integer.
 * @returns {{next: () => number, int: (bound: number) => number, pick: <T>(items: T[]) => T,
 *   chance: (probability: number) => boolean, weighted: <T>(table: [number, T][]) => T}}
 */
function prng(seed) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (bound) => Math.floor(next() * bound),
    pick: (items) => items[Math.floor(next() * items.length)],
    chance: (probability) => next() < probability,
    weighted(table) {
      const total = table.reduce((sum, [weight]) => sum + weight, 0);
      let roll = next() * total;
      for (const [weight, value] of table) {
        roll -= weight;
        if (roll < 0) return value;
      }
      return table[table.length - 1][1];
    },
  };
}

module.exports = { prng };
