// Placeholder: uploads (hashing, duplicate check, batch polling).
export {};
