// Types of the committed bundle (peerlink-client.js), for `tsc --checkJs` of the web app:
// the client's own source, which carries the types generated from openapi/openapi.json.
export * from "../../../clients/typescript/src/index";
