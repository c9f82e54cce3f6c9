// Package all links every KMS provider: import it for its side effects when
// a program may meet key ids of any kind.
//
//	import _ "github.com/kmspostgres/kmspostgres/providers/all"
package all

import (
	_ "github.com/kmspostgres/kmspostgres/providers/awskms" // AWS KMS
	_ "github.com/kmspostgres/kmspostgres/providers/gcpkms" // Google Cloud KMS
	_ "github.com/kmspostgres/kmspostgres/providers/vault"  // Vault transit
)
