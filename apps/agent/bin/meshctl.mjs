#!/usr/bin/env node
import { main } from "../dist/cli/meshctl.js";

// Exit explicitly: the code is the contract with scripts, not whatever handles are left open.
process.exit(await main(process.argv.slice(2)));
