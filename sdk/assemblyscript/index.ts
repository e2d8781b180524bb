// import { RootContext, Context, registerRootContext, ... } from "@rustygate/proxy-wasm";
export * from "./assembly/runtime";
export * from "./assembly/json";
