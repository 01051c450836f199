// Run Python under the MicroPython WebAssembly port with the repo's device/ package installed.
//
//   node tests/wasm/run.mjs [--heap 1m] [--lib DIR]... [--js NAME=FILE.mjs]... [FILE.py | -]
//
// Copies <repo>/device/**.py into the in-memory file system as /lib/device (importable as
// `device`), and every .py of each --lib DIR (default: tests/wasm/lib) into /lib, then runs FILE
// (or stdin) as __main__. Each --js module is imported and registered with registerJsModule, so
// Python can `import NAME` and call its exports (use asyncio.run for async code). stdout/stderr are forwarded; an
// uncaught Python exception prints its traceback to stderr and exits with status 1;
// sys.exit(n) exits with n.
import fs from "fs";
import path from "path";
import { fileURLToPath, pathToFileURL } from "url";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "..", "..");
let heap = 1024 * 1024;
const libs = [];
const jsmods = [];
let file = "-";
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--heap") {
    const v = args[++i].toLowerCase();
    heap = parseInt(v) * (v.endsWith("k") ? 1024 : v.endsWith("m") ? 1048576 : 1);
  } else if (args[i] === "--lib") libs.push(path.resolve(args[++i]));
  else if (args[i] === "--js") {
    const [name, mod] = args[++i].split("=");
    jsmods.push([name, path.resolve(mod)]);
  }
  else file = args[i];
}
if (libs.length === 0) libs.push(path.join(here, "lib"));

const mp = await loadMicroPython({
  heapsize: heap,
  linebuffer: false,
  stdout: (b) => process.stdout.write(b),
  stderr: (b) => process.stderr.write(b),
});

function copyTree(src, dst) {
  try { mp.FS.mkdir(dst); } catch (e) { /* exists */ }
  for (const ent of fs.readdirSync(src, { withFileTypes: true })) {
    const s = path.join(src, ent.name);
    if (ent.isDirectory()) {
      if (ent.name !== "__pycache__") copyTree(s, dst + "/" + ent.name);
    } else if (ent.name.endsWith(".py")) {
      mp.FS.writeFile(dst + "/" + ent.name, fs.readFileSync(s));
    }
  }
}
try { mp.FS.mkdir("/lib"); } catch (e) { /* exists */ }
copyTree(path.join(repo, "device"), "/lib/device");
for (const lib of libs) if (fs.existsSync(lib)) copyTree(lib, "/lib");

for (const [name, file] of jsmods) {
  mp.registerJsModule(name, await import(pathToFileURL(file).href));
}

const code = file === "-" ? fs.readFileSync(0, "utf8") : fs.readFileSync(file, "utf8");
// Run inside a wrapper so the traceback is printed by MicroPython itself.
mp.globals.set("__fota_src", code);
const wrapper = `
import sys
if "/lib" not in sys.path:
    sys.path.append("/lib")
__fota_status = 0
try:
    exec(__fota_src, {"__name__": "__main__"})
except SystemExit as __e:
    __fota_status = __e.args[0] if __e.args and isinstance(__e.args[0], int) else (1 if __e.args and __e.args[0] is not None else 0)
except BaseException as __e:
    sys.print_exception(__e, sys.stderr)
    __fota_status = 1
`;
try {
  await mp.runPythonAsync(wrapper);
} catch (e) {
  process.stderr.write(String(e) + "\n");
  process.exit(1);
}
process.exitCode = mp.globals.get("__fota_status");
