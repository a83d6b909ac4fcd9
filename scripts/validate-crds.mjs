#!/usr/bin/env node
// Validate every custom resource in rendered manifests against the schema of its CRD, as
// published in the @kubernetes-models npm packages (installed by scripts/install-test-tools.sh
// into $FLOODGATE_TOOLS/npm from scripts/crd-models/package-lock.json):
//
//   node scripts/validate-crds.mjs RENDERED.yaml...
//
// For each document the model class is picked by apiVersion and kind, constructed and its
// validate() run: types, enums, patterns, bounds and required fields of the upstream CRD
// schema. Those validators let unknown fields through, as an API server prunes them silently;
// like `kubectl apply` (strict field validation) and `kubernetes-validate --strict` for the core
// kinds, this script rejects them, walking the document along the model's declared TypeScript
// type (generated from the same schema), so a misspelt field cannot vanish on install.
//
// A document whose API group has no package here, or whose kind has no model in it, fails:
// nothing passes unchecked. Documents of the Kubernetes API itself belong to
// kubernetes-validate (scripts/deploy-checks.py split separates them). Prints one line per
// object and exits non-zero if any failed.
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

const TOOLS = process.env.FLOODGATE_TOOLS || path.join(os.homedir(), ".cache", "floodgate-tools");
const NPM = path.join(TOOLS, "npm");
const MODULES = path.join(NPM, "node_modules");

// API group -> the package whose models (one module per group/version/kind) cover it.
const PACKAGES = {
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
  "networking.istio.io": "@kubernetes-models/istio",
  "security.istio.io": "@kubernetes-models/istio",
  "keda.sh": "@kubernetes-models/keda",
  "gateway.networking.k8s.io": "@kubernetes-models/gateway-api",
};

function die(message) {
  console.error(`error: ${message}`);
  process.exit(2);
}

if (!existsSync(path.join(MODULES, "yaml"))) {
  die(`no models under ${MODULES}: run scripts/install-test-tools.sh`);
}
const require = createRequire(path.join(NPM, "package.json"));
const YAML = require("yaml");

const files = process.argv.slice(2);
if (files.length === 0) die("usage: validate-crds.mjs RENDERED.yaml...");

function packageVersion(pkg) {
  return JSON.parse(readFileSync(path.join(MODULES, pkg, "package.json"), "utf8")).version;
}

// Where the model of apiVersion/kind lives, or why there is none.
function locate(apiVersion, kind) {
  const slash = apiVersion.lastIndexOf("/");
  if (slash < 0) return { error: `${apiVersion} is a core Kubernetes API version, not a custom resource` };
  const group = apiVersion.slice(0, slash);
  const version = apiVersion.slice(slash + 1);
  const pkg = PACKAGES[group];
  if (!pkg) return { error: `no model package for API group ${group}` };
  if (!/^[A-Za-z0-9]+$/.test(kind) || !/^v[0-9a-z]+$/.test(version)) {
    return { error: `malformed apiVersion/kind ${apiVersion} ${kind}` };
  }
  const subpath = `${group}/${version}/${kind}`;
  const file = path.join(MODULES, pkg, `${subpath}.js`);
  if (!existsSync(file)) return { error: `${pkg} ${packageVersion(pkg)} has no model for ${apiVersion} ${kind}` };
  return { pkg, specifier: `${pkg}/${subpath}`, modelPath: file };
}

// --- unknown fields, along the declared types ----------------------------------------------
let ts;
let checker;
const declared = new Map(); // specifier -> ts.Type of I<Kind>

function loadTypes(specifiers) {
  ts = require("typescript");
  const entry = path.join(NPM, "__floodgate_crds__.ts");
  const names = [...specifiers];
  const source = names
    .map((spec, i) => `import type { I${spec.split("/").pop()} as T${i} } from "${spec}";`)
    .concat(`export type All = { ${names.map((_, i) => `t${i}: T${i};`).join(" ")} };`)
    .join("\n");
  const options = {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    skipLibCheck: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  host.getSourceFile = (f, lang) => (f === entry ? ts.createSourceFile(f, source, lang) : getSourceFile(f, lang));
  host.fileExists = (f) => f === entry || fileExists(f);
  const program = ts.createProgram([entry], options, host);
  const problems = ts
    .getPreEmitDiagnostics(program)
    .filter((d) => d.file && d.file.fileName === entry)
    .map((d) => ts.flattenDiagnosticMessageText(d.messageText, " "));
  if (problems.length) die(`cannot load the models' declared types: ${problems.join("; ")}`);
  checker = program.getTypeChecker();
  const all = checker.getDeclaredTypeOfSymbol(
    checker.getSymbolAtLocation(program.getSourceFile(entry)).exports.get("All"),
  );
  names.forEach((spec, i) => declared.set(spec, checker.getTypeOfSymbol(checker.getPropertyOfType(all, `t${i}`))));
}

function members(type) {
  type = checker.getNonNullableType(type);
  return type.isUnion() ? type.types : [type];
}

// Paths of the fields of value that type does not declare (none where the type is open).
function unknownFields(value, type, at) {
  if (value === null || typeof value !== "object") return [];
  const open = ts.TypeFlags.Any | ts.TypeFlags.Unknown;
  if (members(type).some((t) => t.flags & open)) return [];
  if (Array.isArray(value)) {
    const array = members(type).find((t) => checker.isArrayType(t) || checker.isTupleType(t));
    if (!array) return [];
    const element = checker.isArrayType(array) ? checker.getTypeArguments(array)[0] : null;
    return element ? value.flatMap((v, i) => unknownFields(v, element, `${at}[${i}]`)) : [];
  }
  const objects = members(type).filter(
    (t) => !(t.flags & ts.TypeFlags.Primitive) && !checker.isArrayType(t) && !checker.isTupleType(t),
  );
  if (objects.length === 0) return [];
  const found = [];
  for (const [key, child] of Object.entries(value)) {
    const here = `${at}.${key}`;
    const candidates = [];
    for (const t of objects) {
      const property = checker.getPropertyOfType(t, key);
      if (property) {
        candidates.push(checker.getTypeOfSymbol(property));
      } else {
        for (const info of checker.getIndexInfosOfType(t)) candidates.push(info.type);
      }
    }
    if (candidates.length === 0) {
      found.push(here);
      continue;
    }
    // Where a union offers several shapes, the one that fits best decides.
    let best = null;
    for (const candidate of candidates) {
      const inner = unknownFields(child, candidate, here);
      if (best === null || inner.length < best.length) best = inner;
      if (best.length === 0) break;
    }
    found.push(...best);
  }
  return found;
}

// --- main ---------------------------------------------------------------------------------
let failed = 0;
let checked = 0;
const fail = (file, what, message) => {
  failed += 1;
  console.log(`FAIL ${file}: ${what}: ${message}`);
};

const work = [];
for (const file of files) {
  // YAML 1.1, as Kubernetes reads manifests (yes/no are booleans there).
  const parsed = YAML.parseAllDocuments(readFileSync(file, "utf8"), { version: "1.1" });
  for (const [index, doc] of parsed.entries()) {
    if (doc.errors.length) {
      fail(file, `document ${index + 1}`, `not YAML: ${doc.errors[0].message}`);
      continue;
    }
    const obj = doc.toJS();
    if (obj === null || obj === undefined) continue;
    const what = `${obj.kind ?? "?"}/${obj.metadata?.namespace ?? "-"}/${obj.metadata?.name ?? "?"}`;
    if (typeof obj.apiVersion !== "string" || typeof obj.kind !== "string") {
      fail(file, what, "no apiVersion or kind");
      continue;
    }
    const where = locate(obj.apiVersion, obj.kind);
    if (where.error) {
      fail(file, what, where.error);
      continue;
    }
    work.push({ file, what, obj, ...where });
  }
}

if (work.length) loadTypes(new Set(work.map((w) => w.specifier)));

for (const { file, what, obj, pkg, specifier, modelPath } of work) {
  checked += 1;
  const module = await import(pathToFileURL(modelPath).href);
  const Model = module[obj.kind];
  if (!Model || Model.apiVersion !== obj.apiVersion || Model.kind !== obj.kind) {
    fail(file, what, `${specifier} does not export a model of ${obj.apiVersion} ${obj.kind}`);
    continue;
  }
  const problems = [];
  if (typeof obj.metadata?.name !== "string" || obj.metadata.name === "") problems.push("metadata.name is missing");
  try {
    new Model(obj).validate();
  } catch (err) {
    problems.push(String(err.message ?? err).replace(/\s+/g, " ").trim());
  }
  const unknown = unknownFields(obj, declared.get(specifier), "");
  if (unknown.length) problems.push(`unknown field${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")}`);
  if (problems.length) {
    fail(file, what, `${problems.join("; ")} (${pkg} ${packageVersion(pkg)})`);
  } else {
    console.log(`ok   ${file}: ${what} ${obj.apiVersion} (${pkg} ${packageVersion(pkg)})`);
  }
}

console.log(`${checked} custom resource${checked === 1 ? "" : "s"} checked, ${failed} failed`);
process.exit(failed ? 1 : 0);
