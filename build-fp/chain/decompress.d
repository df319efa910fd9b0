build-fp/chain/decompress.o: chain/decompress.c chain/decompress.h
chain/decompress.h:
