// @ts-check
// Small DOM helpers for the views: look elements up by id, and change them only where the
// value differs (so an update that changes nothing touches nothing).

/** @param {string} id @returns {HTMLElement} */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el;
}

/** @param {string} id @returns {HTMLInputElement} */
export const inputById = (id) => /** @type {HTMLInputElement} */ (byId(id));
/** @param {string} id @returns {HTMLSelectElement} */
export const selectById = (id) => /** @type {HTMLSelectElement} */ (byId(id));
/** @param {string} id @returns {HTMLTextAreaElement} */
export const textAreaById = (id) => /** @type {HTMLTextAreaElement} */ (byId(id));

/** @param {HTMLElement} el @param {string} text */
export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/** @param {HTMLElement} el @param {boolean} hidden */
export function setHidden(el, hidden) {
  if (el.hidden !== hidden) el.hidden = hidden;
}

/** A status pill: its text, green when `on`. @param {HTMLElement} el @param {string} text @param {boolean} on */
export function setPill(el, text, on) {
  setText(el, text);
  el.classList.toggle("pill-on", on);
  el.classList.toggle("pill-off", !on);
}

/** @param {readonly unknown[]} a @param {readonly unknown[]} b */
const sameDeps = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);

/**
 * A list whose elements are keyed: each item's element is built once and rebuilt only when
 * its dependencies change (compared by identity); updates move, add and remove elements,
 * never rebuild the list.
 * @template T
 * @template {Element} E
 */
export class KeyedList {
  /**
   * @param {Element} parent
   * @param {(item: T) => string} key
   * @param {(item: T) => readonly unknown[]} deps what the element shows of the item
   * @param {(item: T) => E} build
   */
  constructor(parent, key, deps, build) {
    this.parent = parent;
    this.key = key;
    this.deps = deps;
    this.build = build;
    /** @type {Map<string, { node: E, deps: readonly unknown[] }>} */
    this.entries = new Map();
  }

  /** @param {readonly T[]} items in order */
  update(items) {
    /** @type {Map<string, { node: E, deps: readonly unknown[] }>} */
    const next = new Map();
    for (const item of items) {
      const key = this.key(item);
      if (next.has(key)) continue;
      const deps = this.deps(item);
      const old = this.entries.get(key);
      next.set(key, old && sameDeps(old.deps, deps) ? old : { node: this.build(item), deps });
    }
    for (const [key, entry] of this.entries) {
      if (next.get(key) !== entry) entry.node.remove();
    }
    this.entries = next;
    let i = 0;
    for (const { node } of next.values()) {
      const at = this.parent.children[i] || null;
      if (at !== node) this.parent.insertBefore(node, at);
      i++;
    }
  }

  /** The elements, in order. */
  nodes() {
    return [...this.entries.values()].map((e) => e.node);
  }
}
