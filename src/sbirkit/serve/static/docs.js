// Renders the server's own OpenAPI schema (no external scripts: the page works offline).
"use strict";

(async function () {
  const intro = document.getElementById("intro");
  const ops = document.getElementById("ops");
  const el = (tag, text, cls) => {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  };
  const refName = (schema) => (schema && schema.$ref ? schema.$ref.split("/").pop() : null);
  const typeOf = (schema) => {
    if (!schema) return "";
    if (schema.$ref) return refName(schema);
    if (schema.anyOf) return schema.anyOf.map(typeOf).filter((t) => t !== "null").join(" | ") + " (optional)";
    if (schema.type === "array") return `array of ${typeOf(schema.items) || "values"}`;
    let t = schema.format ? `${schema.type} (${schema.format})` : schema.type || "";
    const bounds = [];
    if (schema.minimum !== undefined) bounds.push(`≥ ${schema.minimum}`);
    if (schema.maximum !== undefined) bounds.push(`≤ ${schema.maximum}`);
    if (schema.enum) bounds.push(`one of ${schema.enum.join(", ")}`);
    if (schema.default !== undefined && schema.default !== null) bounds.push(`default ${schema.default}`);
    return bounds.length ? `${t}, ${bounds.join(", ")}` : t;
  };
  try {
    const res = await fetch("openapi.json");
    const spec = await res.json();
    intro.textContent = `${spec.info.title} ${spec.info.version}: ${spec.info.summary || ""} ${spec.info.description || ""}`;
    for (const [path, methods] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(methods)) {
        const sec = el("section", undefined, "op");
        sec.append(el("h2", `${method.toUpperCase()} ${path}`));
        if (op.summary) sec.append(el("p", op.summary));
        if (op.parameters && op.parameters.length) {
          const ul = el("ul");
          for (const p of op.parameters) {
            ul.append(el("li", `${p.name} (${p.in}${p.required ? ", required" : ""}): ${typeOf(p.schema)}${p.description ? " — " + p.description : ""}`));
          }
          sec.append(el("h3", "Parameters"), ul);
        }
        if (op.requestBody) {
          const ul = el("ul");
          for (const [media, body] of Object.entries(op.requestBody.content || {})) {
            ul.append(el("li", `${media}: ${typeOf(body.schema)}`));
          }
          sec.append(el("h3", "Body"), ul);
          if (op.requestBody.description) sec.append(el("p", op.requestBody.description));
        }
        const ul = el("ul");
        for (const [code, r] of Object.entries(op.responses || {})) {
          const media = r.content ? Object.keys(r.content).join(", ") : "";
          ul.append(el("li", `${code}: ${r.description || ""}${media ? " (" + media + ")" : ""}`));
        }
        sec.append(el("h3", "Responses"), ul);
        ops.append(sec);
      }
    }
    const schemas = (spec.components && spec.components.schemas) || {};
    for (const [name, schema] of Object.entries(schemas)) {
      if (!schema.properties) continue;
      const sec = el("section", undefined, "op");
      sec.append(el("h2", name));
      if (schema.description) sec.append(el("p", schema.description));
      const ul = el("ul");
      for (const [field, s] of Object.entries(schema.properties)) {
        const req = (schema.required || []).includes(field) ? ", required" : "";
        ul.append(el("li", `${field}${req}: ${typeOf(s)}${s.description ? " — " + s.description : ""}`));
      }
      sec.append(ul);
      ops.append(sec);
    }
  } catch (err) {
    intro.textContent = `Could not load openapi.json: ${err}`;
  }
})();
