build-fp/fs/options.o: fs/options.c fs/options.h
fs/options.h:
