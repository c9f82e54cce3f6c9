package kmspgx

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// batchResults runs a batch's statements one at a time through the
// engine, as the caller reads their results; Close runs what is left.
type batchResults struct {
	ctx     context.Context
	s       session
	b       *pgx.Batch
	next    int
	rows    pgx.Rows // the open result of the last Query
	err     error
	closed  bool
	finish  func(error) error // ends the transaction the batch runs in
	release func()
}

var _ pgx.BatchResults = (*batchResults)(nil)

func sendBatch(ctx context.Context, s session, b *pgx.Batch, release func()) pgx.BatchResults {
	br := &batchResults{ctx: ctx, s: s, b: b, release: release}
	if batchBeginsTx(b) {
		br.err = errors.New("kmspgx: Batch.BeginTx is not supported: call Begin, then SendBatch on the transaction")
		return br
	}
	if s.pc.PgConn().TxStatus() != 'I' {
		return br
	}
	// A batch that begins or ends transactions runs as its statements say;
	// the others run in one, so that a failure (SAVEPOINT, RELEASE and
	// ROLLBACK TO included, which fail outside a transaction block) rolls
	// the whole batch back, as pgx's implicit transaction does.
	for _, qq := range b.QueuedQueries {
		if s.s.TxControl(ctx, qq.SQL) {
			return br
		}
	}
	finish, err := s.s.EnsureTx(ctx)
	if err != nil {
		br.err = err
		return br
	}
	br.finish = finish
	return br
}

// batchBeginsTx reports whether Batch.BeginTx was called on b. pgx keeps
// its options unexported; they are only looked at, not used.
func batchBeginsTx(b *pgx.Batch) bool {
	f := reflect.ValueOf(b).Elem().FieldByName("txOptions")
	return f.IsValid() && f.Kind() == reflect.Pointer && !f.IsNil()
}

// queued returns the next statement, closing the previous one's rows.
func (br *batchResults) queued() (*pgx.QueuedQuery, error) {
	br.closeRows()
	if br.err != nil {
		return nil, br.err
	}
	if br.closed {
		return nil, errors.New("kmspgx: batch already closed")
	}
	if br.b == nil || br.next >= len(br.b.QueuedQueries) {
		return nil, fmt.Errorf("kmspgx: no more results in batch")
	}
	qq := br.b.QueuedQueries[br.next]
	br.next++
	return qq, nil
}

func (br *batchResults) closeRows() {
	if br.rows == nil {
		return
	}
	br.rows.Close()
	if err := br.rows.Err(); err != nil && br.err == nil {
		br.err = err
	}
	br.rows = nil
}

func (br *batchResults) fail(err error) error {
	if br.err == nil {
		br.err = err
	}
	return err
}

// Exec runs the next statement.
func (br *batchResults) Exec() (pgconn.CommandTag, error) {
	qq, err := br.queued()
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.s.Exec(br.ctx, qq.SQL, qq.Arguments...)
	if err != nil {
		return tag, br.fail(err)
	}
	return tag, nil
}

// Query runs the next statement and returns its rows; they are closed
// when the next result is read or the batch is closed.
func (br *batchResults) Query() (pgx.Rows, error) {
	qq, err := br.queued()
	if err != nil {
		return errRows{err}, err
	}
	rows, err := br.s.Query(br.ctx, qq.SQL, qq.Arguments...)
	if err != nil {
		return rows, br.fail(err)
	}
	br.rows = rows
	return rows, nil
}

// QueryRow runs the next statement and returns its one row.
func (br *batchResults) QueryRow() pgx.Row {
	rows, err := br.Query()
	return &row{rows: rows, err: err}
}

// Close runs the statements not read yet (their QueuedQuery callbacks, if
// any), ends the batch's transaction and gives the connection back.
func (br *batchResults) Close() error {
	if br.closed {
		return br.err
	}
	for br.err == nil && br.b != nil && br.next < len(br.b.QueuedQueries) {
		if fn := br.b.QueuedQueries[br.next].Fn; fn != nil {
			if err := fn(br); err != nil {
				br.fail(err)
			}
		} else {
			br.Exec()
		}
	}
	br.closeRows()
	br.closed = true
	if br.finish != nil {
		err := br.finish(br.err)
		if br.err == nil {
			br.err = err
		}
		br.finish = nil
	}
	if br.release != nil {
		br.release()
		br.release = nil
	}
	return br.err
}

// Tx is nil: Batch.BeginTx is not supported.
func (br *batchResults) Tx() pgx.Tx { return nil }
