// Public surface of the packet module: classifier, result type, key layout and hashing.
export * from "./classify.js";
