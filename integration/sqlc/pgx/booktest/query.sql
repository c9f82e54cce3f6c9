-- name: GetAuthor :one
SELECT * FROM authors
WHERE author_id = $1;

-- name: CreateAuthor :one
INSERT INTO authors (name) VALUES ($1)
RETURNING *;

-- name: GetBook :one
SELECT * FROM books
WHERE book_id = $1;

-- name: DeleteBook :exec
DELETE FROM books
WHERE book_id = $1;

-- name: BooksByAuthor :many
SELECT * FROM books
WHERE author_id = $1
ORDER BY book_id;

-- name: BooksByTags :many
SELECT
    book_id,
    title,
    name,
    isbn,
    tags
FROM books
LEFT JOIN authors ON books.author_id = authors.author_id
WHERE tags && $1::varchar[]
ORDER BY book_id;

-- name: CreateBook :one
INSERT INTO books (
    author_id,
    isbn,
    book_type,
    title,
    subtitle,
    year,
    available,
    published,
    signed_at,
    price,
    catalog_id,
    copies_sold,
    tags
) VALUES (
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13
)
RETURNING *;

-- name: UpdateBook :exec
UPDATE books
SET title = $1, tags = $2
WHERE book_id = $3;

-- name: UpdateBookISBN :exec
UPDATE books
SET title = $1, tags = $2, isbn = $4
WHERE book_id = $3;

-- name: SetPublished :execrows
UPDATE books
SET published = sqlc.narg(published)
WHERE author_id = sqlc.arg(author_id);

-- name: CreateBooks :copyfrom
INSERT INTO books (
    author_id, isbn, book_type, title, subtitle, year, available,
    published, signed_at, price, catalog_id, copies_sold, tags
) VALUES (
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13
);

-- name: BooksByYear :batchmany
SELECT * FROM books
WHERE year = $1
ORDER BY book_id;

-- name: UpdateBookSales :batchexec
UPDATE books
SET price = $2, copies_sold = $3
WHERE book_id = $1;

-- name: CreateBookBatch :batchone
INSERT INTO books (
    author_id, isbn, title, year, published, price, catalog_id, copies_sold
) VALUES (
    $1, $2, $3, $4, $5, $6, $7, $8
)
RETURNING *;
