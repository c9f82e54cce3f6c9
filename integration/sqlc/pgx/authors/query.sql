-- name: GetAuthor :one
SELECT * FROM authors
WHERE id = $1 LIMIT 1;

-- name: ListAuthors :many
SELECT * FROM authors
ORDER BY id;

-- name: CreateAuthor :one
INSERT INTO authors (
    name, bio
) VALUES (
    $1, $2
)
RETURNING *;

-- name: UpdateAuthor :exec
UPDATE authors
SET name = $2, bio = $3
WHERE id = $1;

-- name: DeleteAuthor :exec
DELETE FROM authors
WHERE id = $1;

-- name: CreateAuthors :copyfrom
INSERT INTO authors (name, bio) VALUES ($1, $2);

-- name: UpdateBioBatch :batchexec
UPDATE authors
SET bio = $2
WHERE id = $1;

-- name: DeleteAuthorsBatch :batchexec
DELETE FROM authors
WHERE id = $1;

-- name: GetAuthorBatch :batchone
SELECT * FROM authors
WHERE id = $1;
