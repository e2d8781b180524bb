// A small JSON reader for filter configuration (RustyGate passes YAML configuration as
// JSON). AssemblyScript has no JSON in its standard library.

export enum JSONKind { Null, Bool, Number, String, Array, Object }

export class JSONValue {
  kind: JSONKind = JSONKind.Null;
  bool: bool = false;
  number: f64 = 0;
  string: string = "";
  items: JSONValue[] = [];
  // Object members, in document order.
  keys: string[] = [];
  members: Map<string, JSONValue> = new Map();

  isString(): bool { return this.kind == JSONKind.String; }
  isArray(): bool { return this.kind == JSONKind.Array; }
  isObject(): bool { return this.kind == JSONKind.Object; }
  has(key: string): bool { return this.members.has(key); }
  // The member `key`; a Null value when absent.
  get(key: string): JSONValue {
    return this.members.has(key) ? this.members.get(key) : new JSONValue();
  }
}

export class JSONResult {
  constructor(public value: JSONValue | null, public error: string) {}
  get ok(): bool { return this.value != null; }
}

export function parseJSON(text: string): JSONResult {
  const p = new Parser(text);
  const value = p.value();
  if (value != null) {
    p.space();
    if (p.pos < text.length) p.fail("unexpected text after the value");
  }
  if (p.error.length > 0) return new JSONResult(null, p.error);
  return new JSONResult(value, "");
}

class Parser {
  pos: i32 = 0;
  error: string = "";
  constructor(public text: string) {}

  fail(what: string): JSONValue | null {
    if (this.error.length == 0) this.error = what + " at offset " + this.pos.toString();
    return null;
  }

  space(): void {
    while (this.pos < this.text.length) {
      const c = this.text.charCodeAt(this.pos);
      if (c != 0x20 && c != 0x09 && c != 0x0a && c != 0x0d) break;
      this.pos++;
    }
  }

  value(): JSONValue | null {
    this.space();
    if (this.pos >= this.text.length) return this.fail("unexpected end");
    const c = this.text.charCodeAt(this.pos);
    if (c == 0x7b) return this.object();
    if (c == 0x5b) return this.array();
    if (c == 0x22) {
      const s = this.str();
      if (s == null) return null;
      const v = new JSONValue();
      v.kind = JSONKind.String;
      v.string = s;
      return v;
    }
    if (this.word("true")) { const v = new JSONValue(); v.kind = JSONKind.Bool; v.bool = true; return v; }
    if (this.word("false")) { const v = new JSONValue(); v.kind = JSONKind.Bool; return v; }
    if (this.word("null")) return new JSONValue();
    return this.num();
  }

  word(w: string): bool {
    if (this.text.startsWith(w, this.pos)) {
      this.pos += w.length;
      return true;
    }
    return false;
  }

  num(): JSONValue | null {
    const start = this.pos;
    while (this.pos < this.text.length) {
      const c = this.text.charCodeAt(this.pos);
      if ((c >= 0x30 && c <= 0x39) || c == 0x2d || c == 0x2b || c == 0x2e || c == 0x65 || c == 0x45) this.pos++;
      else break;
    }
    if (start == this.pos) return this.fail("unexpected character");
    const n = parseFloat(this.text.substring(start, this.pos));
    if (isNaN(n)) return this.fail("invalid number");
    const v = new JSONValue();
    v.kind = JSONKind.Number;
    v.number = n;
    return v;
  }

  str(): string | null {
    this.pos++; // opening quote
    let out = "";
    let run = this.pos;
    while (this.pos < this.text.length) {
      const c = this.text.charCodeAt(this.pos);
      if (c == 0x22) {
        out += this.text.substring(run, this.pos);
        this.pos++;
        return out;
      }
      if (c < 0x20) { this.fail("control character in string"); return null; }
      if (c != 0x5c) { this.pos++; continue; }
      out += this.text.substring(run, this.pos);
      this.pos++;
      if (this.pos >= this.text.length) break;
      const e = this.text.charCodeAt(this.pos++);
      if (e == 0x22) out += "\"";
      else if (e == 0x5c) out += "\\";
      else if (e == 0x2f) out += "/";
      else if (e == 0x62) out += "\b";
      else if (e == 0x66) out += "\f";
      else if (e == 0x6e) out += "\n";
      else if (e == 0x72) out += "\r";
      else if (e == 0x74) out += "\t";
      else if (e == 0x75 && this.pos + 4 <= this.text.length) {
        const code = I32.parseInt(this.text.substring(this.pos, this.pos + 4), 16);
        if (isNaN(<f64>code)) { this.fail("invalid \\u escape"); return null; }
        out += String.fromCharCode(code);
        this.pos += 4;
      } else { this.fail("invalid escape"); return null; }
      run = this.pos;
    }
    this.fail("unterminated string");
    return null;
  }

  array(): JSONValue | null {
    this.pos++;
    const v = new JSONValue();
    v.kind = JSONKind.Array;
    this.space();
    if (this.pos < this.text.length && this.text.charCodeAt(this.pos) == 0x5d) { this.pos++; return v; }
    while (true) {
      const item = this.value();
      if (item == null) return null;
      v.items.push(item);
      this.space();
      if (this.pos >= this.text.length) return this.fail("unterminated array");
      const c = this.text.charCodeAt(this.pos++);
      if (c == 0x5d) return v;
      if (c != 0x2c) return this.fail("expected , or ]");
    }
  }

  object(): JSONValue | null {
    this.pos++;
    const v = new JSONValue();
    v.kind = JSONKind.Object;
    this.space();
    if (this.pos < this.text.length && this.text.charCodeAt(this.pos) == 0x7d) { this.pos++; return v; }
    while (true) {
      this.space();
      if (this.pos >= this.text.length || this.text.charCodeAt(this.pos) != 0x22) return this.fail("expected a member name");
      const key = this.str();
      if (key == null) return null;
      this.space();
      if (this.pos >= this.text.length || this.text.charCodeAt(this.pos) != 0x3a) return this.fail("expected :");
      this.pos++;
      const item = this.value();
      if (item == null) return null;
      if (!v.members.has(key)) v.keys.push(key);
      v.members.set(key, item);
      this.space();
      if (this.pos >= this.text.length) return this.fail("unterminated object");
      const c = this.text.charCodeAt(this.pos++);
      if (c == 0x7d) return v;
      if (c != 0x2c) return this.fail("expected , or }");
    }
  }
}
