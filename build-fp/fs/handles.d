build-fp/fs/handles.o: fs/handles.c fs/handles.h
fs/handles.h:
