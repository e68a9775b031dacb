"""The origin role: Kraken's dedicated seeder, with its chunked upload API."""
