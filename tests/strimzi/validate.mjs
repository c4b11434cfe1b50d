// Validates Strimzi custom resources against Strimzi's CRD schemas, as
// the @kubernetes-models/strimzi-kafka-operator package compiles them.
// Input on stdin: a JSON array of resources. Prints one line per resource
// ("ok KIND NAME" or "invalid KIND NAME: errors") and exits 1 if any is
// invalid or of a kind it has no schema for.
import { readFileSync } from "node:fs";

const input = JSON.parse(readFileSync(0, "utf8"));
let failed = false;
for (const doc of input) {
  const [group, version] = String(doc.apiVersion).split("/");
  const name = doc.metadata?.name;
  let Model;
  try {
    const mod = await import(`@kubernetes-models/strimzi-kafka-operator/${group}/${version}/${doc.kind}`);
    Model = mod[doc.kind];
  } catch (e) {
    console.log(`invalid ${doc.kind} ${name}: no schema for ${doc.apiVersion} ${doc.kind}`);
    failed = true;
    continue;
  }
  try {
    new Model(doc).validate();
    console.log(`ok ${doc.kind} ${name}`);
  } catch (e) {
    console.log(`invalid ${doc.kind} ${name}: ${e.message} ${JSON.stringify(e.errors ?? [])}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
