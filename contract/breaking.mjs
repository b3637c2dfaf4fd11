// Breaking-change check of the API contract (api-smart-diff; see ../README.md "Contract").
// usage: node breaking.mjs BEFORE.json AFTER.json CHANGELOG.md
// Exit 0 when nothing breaks, or when every breaking change is announced: the new contract's
// info.version has a CHANGELOG heading marked "(breaking)". Exit 1 otherwise, listing them.
import { readFileSync } from "node:fs";
import { apiCompare } from "api-smart-diff";

const [beforePath, afterPath, changelogPath] = process.argv.slice(2);
if (!beforePath || !afterPath || !changelogPath) {
  console.error("usage: node breaking.mjs BEFORE.json AFTER.json CHANGELOG.md");
  process.exit(2);
}
const before = JSON.parse(readFileSync(beforePath, "utf8"));
const after = JSON.parse(readFileSync(afterPath, "utf8"));
const { diffs } = apiCompare(before, after);
// A change inside components/schemas is classified without knowing where the schema is used
// (a property added to a response-only schema shows as "breaking" there); the same change is
// classified in context under `paths`, where $refs are resolved. So only operations and the
// security schemes decide.
const decides = (d) => ["paths", "security"].includes((d.path || [])[0]) ||
  ((d.path || [])[0] === "components" && (d.path || [])[1] === "securitySchemes");
const breaking = diffs.filter((d) => d.type === "breaking" && decides(d));
const kind = (d) => (d.type === "breaking" && !decides(d) ? "component-only" : d.type);
const counts = diffs.reduce((acc, d) => ({ ...acc, [kind(d)]: (acc[kind(d)] || 0) + 1 }), {});
console.log(`contract ${before.info.version} -> ${after.info.version}: ` +
  (Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(", ") || "no changes"));
if (breaking.length === 0) process.exit(0);

const where = (d) => (d.path || []).join(" > ");
for (const d of breaking) console.log(`  breaking: ${d.description || d.action} (${where(d)})`);
const version = after.info.version;
const escaped = version.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const heading = new RegExp(`^## ${escaped}\\b.*\\(breaking\\)`, "mi");
const announced = version !== before.info.version &&
  heading.test(readFileSync(changelogPath, "utf8"));
if (announced) {
  console.log(`announced: openapi/CHANGELOG.md marks ${version} as breaking`);
  process.exit(0);
}
console.error(`FAIL: ${breaking.length} unannounced breaking change(s). Bump info.version and ` +
  `add a "## <version> ... (breaking)" entry to openapi/CHANGELOG.md, or make the change additive.`);
process.exit(1);
