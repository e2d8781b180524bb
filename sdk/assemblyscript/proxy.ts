// A filter's entry file re-exports the ABI callbacks:
//   export * from "@rustygate/proxy-wasm/proxy";
export * from "./assembly/exports";
