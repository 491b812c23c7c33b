#!/usr/bin/env node
// `terraform fmt` without terraform: HashiCorp's hclwrite.Format (the function terraform fmt
// runs on every file) compiled to WebAssembly, from the npm package @cdktf/hcl-tools, installed
// by `make infra-tools` under .dotshop/tools/hcl. Prints {"<path>": "<formatted text>"} for the
// files given; tests/infra/test_terraform_fmt.py compares them with the files as committed.
"use strict";
const fs = require("fs");
const path = require("path");

const tools = process.env.DOTSHOP_HCL_TOOLS || path.resolve(__dirname, "../../../.dotshop/tools/hcl/node_modules");
const { format } = require(path.join(tools, "@cdktf/hcl-tools"));

(async () => {
  const out = {};
  for (const file of process.argv.slice(2)) {
    out[file] = await format(fs.readFileSync(file, "utf8"));
  }
  process.stdout.write(JSON.stringify(out));
})().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
