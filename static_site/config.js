// Where the API lives. "" means the same origin as this page (the local run command serves both).
// A deployment that hosts the page elsewhere (Azure Storage static website) overwrites this file with
// the API's URL, e.g. window.FACE_API_BASE = "https://face-api.example.net";
window.FACE_API_BASE = "";
