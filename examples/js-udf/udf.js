// A burncache function component written in JavaScript: `{"n": N}` in,
// `{"n": N + 1}` out; bytes in, the same bytes reversed out. `node build.mjs`
// type-checks it against typings generated from the WIT and builds it into a
// `burncache:host/udf` component with componentize-js.

/** @typedef {import("burncache:host/types@0.1.1").Payload} Payload */

/** @type {typeof import("burncache:host/function@0.1.1")} */
const impl = {
  call(input) {
    if (input.tag === "bytes") {
      return { tag: "bytes", val: input.val.slice().reverse() };
    }
    const value = JSON.parse(input.val);
    if (typeof value?.n !== "number") {
      // A thrown string is the call's `err`: burncache reports it as `guest`.
      throw `expected {"n": <number>}, got ${input.val}`;
    }
    return { tag: "json", val: JSON.stringify({ n: value.n + 1 }) };
  },

  callBatch(inputs) {
    return inputs.map((input) => {
      try {
        return { tag: "ok", val: impl.call(input) };
      } catch (e) {
        return { tag: "err", val: String(e) };
      }
    });
  },
};

// `function` is a reserved word, but any name can be exported this way.
export { impl as function };
